// Where a tensor's elements are, in logical (row-major) order, as plain data a kernel can take.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "../math/unroll.h"

namespace torchinit::cuda {

// Dimensions a layout keeps after coalescing; tensors with more take a contiguous temporary.
constexpr int kMaxDims = 8;

// Logical (row-major) index -> element offset in memory.
struct StridedLayout {
  int32_t ndim;  // 0: contiguous
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];

  C10_HOST_DEVICE int64_t offset(int64_t i) const {
    int64_t offset = ndim == 0 ? i : 0;
    TORCHINIT_NO_UNROLL
    for (int32_t d = ndim - 1; d >= 0; --d) {
      offset += (i % sizes[d]) * strides[d];
      i /= sizes[d];
    }
    return offset;
  }
};

// The layout of `self` with size-1 dimensions dropped and mergeable neighbours merged; nullopt
// when more than kMaxDims remain.
inline std::optional<StridedLayout> strided_layout(const at::Tensor& self) {
  c10::SmallVector<int64_t, kMaxDims> sizes, strides;
  for (int64_t d = 0; d < self.dim(); ++d) {
    if (self.size(d) == 1) continue;
    if (!sizes.empty() && strides.back() == self.size(d) * self.stride(d)) {
      sizes.back() *= self.size(d);
      strides.back() = self.stride(d);
    } else {
      sizes.push_back(self.size(d));
      strides.push_back(self.stride(d));
    }
  }
  StridedLayout layout{};
  if (sizes.empty() || (sizes.size() == 1 && strides[0] == 1)) return layout;  // contiguous
  if (sizes.size() > kMaxDims) return std::nullopt;
  layout.ndim = static_cast<int32_t>(sizes.size());
  std::copy(sizes.begin(), sizes.end(), layout.sizes);
  std::copy(strides.begin(), strides.end(), layout.strides);
  return layout;
}

}  // namespace torchinit::cuda
