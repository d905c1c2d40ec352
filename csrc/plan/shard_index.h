// Which elements of a logical tensor a target holds: all of it, or a shard (a rectangular piece
// of a larger tensor, such as one rank's part of it), numbered as the larger tensor's elements,
// whose values it takes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/SmallVector.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <cstdint>

#include "../math/unroll.h"
#include "checks.h"

namespace torchinit {

// Element i (row-major) of a shard with `ndim` dims of sizes `sizes`, as an index of the larger
// tensor it is a shard of: base + the sum of i's row-major digits times `strides` (the larger
// tensor's strides). ndim 0: the shard is one range of the larger tensor, base + i.
C10_HOST_DEVICE inline int64_t full_index(int64_t i, int64_t ndim, const int64_t* sizes,
                                          const int64_t* strides, int64_t base) {
  if (ndim == 0) return base + i;
  int64_t full = base;
  TORCHINIT_NO_UNROLL
  for (int64_t d = ndim - 1; d > 0; --d) {
    full += (i % sizes[d]) * strides[d];
    i /= sizes[d];
  }
  return full + i * strides[0];
}

// Maps a target's logical (row-major) element indices to those of the logical tensor whose fill
// it takes, as full_index does. The shard's dimensions are merged where it spans the inner one's
// full extent (and those of size 1 dropped), so local elements stay consecutive in the full
// numbering as far as the geometry allows: a whole tensor or a shard of whole rows is one range
// (no dimensions left), a shard of columns is runs of its row width. Fills work run by run, and
// a run costs at least a SIMD batch of Philox blocks however short it is: runs of a conv
// kernel's width (3, or 1 for 1x1) would waste nearly all of every batch.
class ShardIndex {
 public:
  // The whole tensor: the identity.
  ShardIndex() = default;

  // self is the shard of a tensor of sizes `full_sizes` that starts at `starts`. Every bound is
  // checked without overflow, and the larger tensor within the RNG contract's element count, so
  // every index the map computes lies in [0, its numel).
  ShardIndex(const at::Tensor& self, c10::IntArrayRef full_sizes, c10::IntArrayRef starts) {
    const int64_t ndim = self.dim();
    TORCH_CHECK_VALUE(static_cast<int64_t>(full_sizes.size()) == ndim &&
                          static_cast<int64_t>(starts.size()) == ndim,
                      "fill_many_: a tensor of shape ", self.sizes(),
                      " needs full sizes and shard starts of length ", ndim, ", got ", full_sizes,
                      " and ", starts);
    c10::SmallVector<int64_t, 6> full_strides(ndim);
    int64_t full_numel = 1;
    for (int64_t d = ndim - 1; d >= 0; --d) {
      TORCH_CHECK_VALUE(
          full_sizes[d] >= 0 && starts[d] >= 0 && starts[d] <= full_sizes[d] - self.size(d),
          "fill_many_: a shard of shape ", self.sizes(), " at ", starts,
          " does not fit in a tensor of shape ", full_sizes);
      full_strides[d] = full_numel;
      TORCH_CHECK_VALUE(
          !c10::mul_overflows(full_numel, full_sizes[d], &full_numel) && full_numel <= kMaxElements,
          "fill_many_: full_sizes ", full_sizes,
          " has more elements than the RNG contract numbers (2^52)");
    }
    const c10::IntArrayRef sizes = self.sizes();  // (numel() refuses fake tensors' symbolic sizes)
    if (std::find(sizes.begin(), sizes.end(), 0) != sizes.end()) return;  // no element to map
    for (int64_t d = 0; d < ndim; ++d) {
      base_ += starts[d] * full_strides[d];  // below full_numel: the shard's first element
      if (sizes[d] == 1) continue;
      if (!sizes_.empty() && strides_.back() == sizes[d] * full_strides[d]) {
        sizes_.back() *= sizes[d];  // the shard spans dimension d's full extent
        strides_.back() = full_strides[d];
      } else {
        sizes_.push_back(sizes[d]);
        strides_.push_back(full_strides[d]);
      }
    }
    if (sizes_.size() == 1 && strides_[0] == 1) {  // one range
      sizes_.clear();
      strides_.clear();
    }
  }

  // The merged dimensions (none: one range from base()) and their strides in the full tensor.
  c10::IntArrayRef sizes() const { return sizes_; }
  c10::IntArrayRef strides() const { return strides_; }
  int64_t base() const { return base_; }

  // Calls run(dst_offset, full_begin, full_end) for the runs that cover local [begin, end).
  template <typename Run>
  void for_each_run(int64_t begin, int64_t end, const Run& run) const {
    const int64_t ndim = static_cast<int64_t>(sizes_.size());
    if (ndim == 0) {
      run(int64_t{0}, base_ + begin, base_ + end);
      return;
    }
    // The innermost dimension is consecutive in the full tensor unless the shard's last
    // dimension was dropped (size 1 of a larger one): then elements are runs of one.
    const int64_t inner = strides_.back() == 1 ? sizes_.back() : 1;
    for (int64_t i = begin; i < end;) {
      const int64_t full = full_index(i, ndim, sizes_.data(), strides_.data(), base_);
      const int64_t stop = std::min(end, i - i % inner + inner);
      run(i - begin, full, full + (stop - i));
      i = stop;
    }
  }

 private:
  c10::SmallVector<int64_t, 6> sizes_, strides_;
  int64_t base_ = 0;
};

}  // namespace torchinit
