// Where eye_ and dirac_ put their ones, shared by every backend. Both are zeros with ones at
// logical indices one_at(0) < one_at(1) < ...: the CPU walks them in order while it writes the
// zeros, the GPU zeroes the whole tensor and then writes the k-th one at in_memory(self)(k).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/strides.h>

#include <algorithm>
#include <cstdint>

#include "checks.h"

namespace torchinit {

// The offset of the k-th one by some strides: g = k / ones_per_group and d = k % ones_per_group
// put it at out channel g * out_per_group + d, in channel d, the kernel's centre. One division a
// one, however many dimensions.
struct OnePlaces {
  int64_t ones_per_group;
  int64_t group;     // from one group's first one to the next group's: out_per_group out channels
  int64_t diagonal;  // from one one to the next in a group: one out and one in channel
  int64_t centre;    // of the first one: the kernel's centre in out and in channel 0

  C10_HOST_DEVICE int64_t operator()(int64_t k) const {
    const int64_t g = k / ones_per_group;
    return g * group + (k - g * ones_per_group) * diagonal + centre;
  }
};

// eye_ is dirac_ with one group and a one-element kernel.
struct IdentityLayout {
  int64_t groups, out_per_group;
  int64_t out_channel;  // elements per out channel
  int64_t num_ones;
  OnePlaces logical;  // the ones' logical (row-major) indices

  static IdentityLayout eye(const at::Tensor& self) {
    check_eye_args(self);
    return of(self, 1);
  }

  static IdentityLayout dirac(const at::Tensor& self, int64_t groups) {
    check_dirac_args(self, groups);
    return of(self, groups);
  }

  // The ones' element offsets in self's memory, by its strides.
  OnePlaces in_memory(const at::Tensor& self) const { return places(self, groups, self.strides()); }

  C10_HOST_DEVICE int64_t one_at(int64_t k) const { return logical(k); }

  // The first k with one_at(k) >= the start of the out channel that holds logical index i.
  C10_HOST_DEVICE int64_t first_one(int64_t i) const {
    const int64_t out = i / out_channel;
    const int64_t g = out / out_per_group;
    const int64_t d = out % out_per_group;
    const int64_t per_group = logical.ones_per_group;
    return g * per_group + (d < per_group ? d : per_group);
  }

 private:
  static OnePlaces places(const at::Tensor& self, int64_t groups, c10::IntArrayRef strides) {
    const int64_t out_per_group = self.size(0) / groups;
    int64_t centre = 0;
    for (int64_t d = 2; d < self.dim(); ++d) centre += self.size(d) / 2 * strides[d];
    return {std::min(out_per_group, self.size(1)), out_per_group * strides[0],
            strides[0] + strides[1], centre};
  }

  static IdentityLayout of(const at::Tensor& self, int64_t groups) {
    const c10::DimVector strides = c10::contiguous_strides(self.sizes());
    const OnePlaces logical = places(self, groups, strides);
    return {groups, self.size(0) / groups, strides[0], groups * logical.ones_per_group, logical};
  }
};

}  // namespace torchinit
