// CPU kernels of the deterministic fills: constant_, eye_, dirac_. Each writes every element
// exactly once, in parallel, for any dtype and strides.
#include <ATen/Dispatch_v2.h>
#include <torch/library.h>

#include <algorithm>

#include "../cpu_runtime/loops.h"
#include "../plan/checks.h"
#include "../plan/identity_layout.h"

namespace torchinit::cpu {
namespace {

void constant_cpu(at::Tensor& self, const at::Scalar& value) {
  // Aliased elements all get the same value, but must not be written by two threads at once.
  const int64_t grain = elements_overlap(self) ? self.numel() : kGrain;
  AT_DISPATCH_V2(self.scalar_type(), "constant_", AT_WRAP([&] {
                   const auto v =
                       value.to<scalar_t>();  // throws, before any write, if v doesn't fit
                   fill_logical<scalar_t, scalar_t>(
                       self,
                       [&](scalar_t* dst, int64_t begin, int64_t end) {
                         std::fill(dst, dst + (end - begin), v);
                       },
                       grain);
                 }),
                 TORCHINIT_FILL_DTYPES);
}

// Zeros with the layout's ones: each task writes its range, then the ones inside it.
void fill_identity(at::Tensor& self, const IdentityLayout& layout) {
  AT_DISPATCH_V2(self.scalar_type(), "fill_identity", AT_WRAP([&] {
                   fill_logical<scalar_t, scalar_t>(
                       self, [&](scalar_t* dst, int64_t begin, int64_t end) {
                         std::fill(dst, dst + (end - begin), scalar_t(0));
                         for (int64_t k = layout.first_one(begin); k < layout.num_ones; ++k) {
                           const int64_t i = layout.one_at(k);
                           if (i >= end) break;
                           if (i >= begin) dst[i - begin] = scalar_t(1);
                         }
                       });
                 }),
                 TORCHINIT_FILL_DTYPES);
}

void eye_cpu(at::Tensor& self) {
  fill_identity(self, IdentityLayout::eye(self));
}

void dirac_cpu(at::Tensor& self, int64_t groups) {
  fill_identity(self, IdentityLayout::dirac(self, groups));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CPU, m) {
  m.impl("constant_", &constant_cpu);
  m.impl("eye_", &eye_cpu);
  m.impl("dirac_", &dirac_cpu);
}

}  // namespace torchinit::cpu
