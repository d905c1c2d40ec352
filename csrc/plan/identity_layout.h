// Where eye_ and dirac_ put their ones, shared by every backend. Both are zeros with ones at
// logical indices one_at(0) < one_at(1) < ...: the CPU walks them in order, the GPU asks is_one
// of each element.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>

#include "checks.h"

namespace torchinit {

// Viewed as (out channels, in channels, kernel elements): the k-th one sits at out channel
// g * out_per_group + d, in channel d, kernel centre, for g = k / ones_per_group,
// d = k % ones_per_group. eye_ is the case of one group and a one-element kernel.
struct IdentityLayout {
  int64_t out_per_group, in_channels, ones_per_group;
  int64_t centre;  // logical offset of the kernel's centre within one (out, in) slice
  int64_t slice;   // elements per (out, in) slice
  int64_t num_ones;

  static IdentityLayout eye(const at::Tensor& self) {
    check_eye_args(self);
    const int64_t ones = std::min(self.size(0), self.size(1));
    return {self.size(0), self.size(1), ones, 0, 1, ones};
  }

  static IdentityLayout dirac(const at::Tensor& self, int64_t groups) {
    check_dirac_args(self, groups);
    IdentityLayout layout{self.size(0) / groups, self.size(1), 0, 0, 1, 0};
    layout.ones_per_group = std::min(layout.out_per_group, layout.in_channels);
    layout.num_ones = groups * layout.ones_per_group;
    for (int64_t d = 2; d < self.dim(); ++d) {
      layout.centre = layout.centre * self.size(d) + self.size(d) / 2;
      layout.slice *= self.size(d);
    }
    return layout;
  }

  C10_HOST_DEVICE int64_t one_at(int64_t k) const {
    const int64_t g = k / ones_per_group;
    const int64_t d = k % ones_per_group;
    return ((g * out_per_group + d) * in_channels + d) * slice + centre;
  }

  // The first k with one_at(k) >= the start of the out channel that holds logical index i.
  C10_HOST_DEVICE int64_t first_one(int64_t i) const {
    const int64_t out = i / (in_channels * slice);
    const int64_t g = out / out_per_group;
    const int64_t d = out % out_per_group;
    return g * ones_per_group + (d < ones_per_group ? d : ones_per_group);
  }

  C10_HOST_DEVICE bool is_one(int64_t i) const {
    const int64_t k = first_one(i);
    return k < num_ones && one_at(k) == i;
  }
};

}  // namespace torchinit
