// CPU kernels of the deterministic fills: constant_, eye_, dirac_. Each writes every element
// exactly once, in parallel, for any dtype and strides.
#include <ATen/Dispatch_v2.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "loops.h"

namespace torchinit::cpu {
namespace {

#define TORCHINIT_ALL_DTYPES \
  AT_EXPAND(AT_ALL_TYPES_AND_COMPLEX), at::kHalf, at::kBFloat16, at::kBool

void constant_cpu(at::Tensor& self, const at::Scalar& value) {
  // Aliased elements all get the same value, but must not be written by two threads at once.
  const int64_t grain =
      at::has_internal_overlap(self) == at::MemOverlap::No ? kGrain : self.numel();
  AT_DISPATCH_V2(self.scalar_type(), "constant_", AT_WRAP([&] {
    const auto v = value.to<scalar_t>();  // throws, before any write, if v doesn't fit
    fill_logical<scalar_t, scalar_t>(
        self, [&](scalar_t* dst, int64_t begin, int64_t end) { std::fill(dst, dst + (end - begin), v); },
        grain);
  }), TORCHINIT_ALL_DTYPES);
}

// Zeros with ones at the logical indices one_at(k) for k = first_one(begin) .. while < end; the
// ones must be increasing in k.
template <typename scalar_t, typename FirstOne, typename OneAt>
void fill_sparse_ones(const at::Tensor& self, const FirstOne& first_one, const OneAt& one_at,
                      int64_t num_ones) {
  fill_logical<scalar_t, scalar_t>(self, [&](scalar_t* dst, int64_t begin, int64_t end) {
    std::fill(dst, dst + (end - begin), scalar_t(0));
    for (int64_t k = first_one(begin); k < num_ones; ++k) {
      const int64_t i = one_at(k);
      if (i >= end) break;
      if (i >= begin) dst[i - begin] = scalar_t(1);
    }
  });
}

void eye_cpu(at::Tensor& self) {
  check_eye_args(self);
  const int64_t cols = self.size(1);
  const int64_t num_ones = std::min(self.size(0), cols);
  AT_DISPATCH_V2(self.scalar_type(), "eye_", AT_WRAP([&] {
    fill_sparse_ones<scalar_t>(
        self, [&](int64_t begin) { return begin / cols; },
        [&](int64_t k) { return k * cols + k; }, num_ones);
  }), TORCHINIT_ALL_DTYPES);
}

void dirac_cpu(at::Tensor& self, int64_t groups) {
  check_dirac_args(self, groups);
  const int64_t out_per_group = self.size(0) / groups;
  const int64_t in_channels = self.size(1);
  const int64_t ones_per_group = std::min(out_per_group, in_channels);
  // Logical offset of the kernel's centre within one (out, in) slice, and that slice's size.
  int64_t centre = 0;
  int64_t slice = 1;
  for (int64_t d = 2; d < self.dim(); ++d) {
    centre = centre * self.size(d) + self.size(d) / 2;
    slice *= self.size(d);
  }
  // The k-th one sits at out channel g * out_per_group + d, in channel d.
  const auto one_at = [&](int64_t k) {
    const int64_t g = k / ones_per_group;
    const int64_t d = k % ones_per_group;
    return ((g * out_per_group + d) * in_channels + d) * slice + centre;
  };
  const auto first_one = [&](int64_t begin) {
    const int64_t out = begin / (in_channels * slice);
    const int64_t g = out / out_per_group;
    return g * ones_per_group + std::min(out % out_per_group, ones_per_group);
  };
  AT_DISPATCH_V2(self.scalar_type(), "dirac_", AT_WRAP([&] {
    fill_sparse_ones<scalar_t>(self, first_one, one_at, groups * ones_per_group);
  }), TORCHINIT_ALL_DTYPES);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CPU, m) {
  m.impl("constant_", &constant_cpu);
  m.impl("eye_", &eye_cpu);
  m.impl("dirac_", &dirac_cpu);
}

}  // namespace torchinit::cpu
