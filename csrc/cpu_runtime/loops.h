// The CPU fill engine: walks a tensor's elements in logical (row-major) order, in parallel, for
// any strides, so views are written in place and nothing outside them is touched.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>

#include "parallel.h"
#include "prefault.h"
#include "simd.h"

namespace torchinit::cpu {

// Elements a task generates into its stack buffer before storing them.
constexpr int64_t kBufferElements = 2048;
// Fewest elements of a parallel task: a fill under twice this runs on the calling thread, where a
// second thread would gain little (figures: benchmarks/README.md, "Tuning constants").
constexpr int64_t kGrain = 1 << 15;

// Writes logically consecutive elements of a strided tensor.
template <typename scalar_t>
class StridedWriter {
 public:
  explicit StridedWriter(const at::Tensor& t)
      : base_(t.data_ptr<scalar_t>()),
        sizes_(t.sizes().begin(), t.sizes().end()),
        strides_(t.strides().begin(), t.strides().end()) {}

  // Stores src[0..count) as elements [begin, begin + count), converting to scalar_t.
  template <typename acc_t>
  void store(int64_t begin, int64_t count, const acc_t* src) const {
    const int64_t ndim = static_cast<int64_t>(sizes_.size());
    if (ndim == 0) {
      *base_ = static_cast<scalar_t>(src[0]);
      return;
    }
    c10::SmallVector<int64_t, 8> index(ndim, 0);
    int64_t rem = begin;
    int64_t offset = 0;
    for (int64_t d = ndim - 1; d >= 0; --d) {
      index[d] = rem % sizes_[d];
      rem /= sizes_[d];
      offset += index[d] * strides_[d];
    }
    const int64_t inner_size = sizes_[ndim - 1];
    const int64_t inner_stride = strides_[ndim - 1];
    while (count > 0) {
      const int64_t run = std::min(count, inner_size - index[ndim - 1]);
      scalar_t* dst = base_ + offset;
      for (int64_t k = 0; k < run; ++k) dst[k * inner_stride] = static_cast<scalar_t>(src[k]);
      src += run;
      count -= run;
      offset += run * inner_stride;
      index[ndim - 1] += run;
      // Carry into the outer dimensions.
      for (int64_t d = ndim - 1; d > 0 && index[d] == sizes_[d]; --d) {
        offset += strides_[d - 1] - index[d] * strides_[d];
        index[d] = 0;
        ++index[d - 1];
      }
    }
  }

 private:
  scalar_t* base_;
  c10::SmallVector<int64_t, 8> sizes_;
  c10::SmallVector<int64_t, 8> strides_;
};

// Writes logical elements [begin, end) of `self` on the calling thread with produce(dst, begin,
// end), which writes the values of logical elements [begin, end) to dst as acc_t. Contiguous
// tensors of type acc_t are produced into directly; contiguous memory is mapped ahead of the
// writes a piece at a time (prefault.h).
template <typename scalar_t, typename acc_t, typename Produce>
void fill_logical_range(const at::Tensor& self, const Produce& produce, int64_t begin,
                        int64_t end) {
  const bool contiguous = self.is_contiguous();
  auto* data = self.data_ptr<scalar_t>();
  const StridedWriter<scalar_t> writer(self);
  constexpr int64_t kPiece = static_cast<int64_t>(kPrefaultBytes / sizeof(scalar_t));
  acc_t buffer[kBufferElements];
  for (int64_t piece = begin; piece < end; piece += kPiece) {
    const int64_t piece_end = std::min(end, piece + kPiece);
    if (contiguous) prefault_for_write(data + piece, (piece_end - piece) * sizeof(scalar_t));
    for (int64_t i = piece; i < piece_end; i += kBufferElements) {
      const int64_t stop = std::min(piece_end, i + kBufferElements);
      if (std::is_same_v<scalar_t, acc_t> && contiguous) {
        produce(reinterpret_cast<acc_t*>(data) + i, i, stop);
      } else {
        produce(buffer, i, stop);
        writer.store(i, stop - i, buffer);
      }
    }
  }
}

// Before a parallel fill of `self`: huge pages for its fresh memory (prefault.h).
inline void prepare_memory(const at::Tensor& self) {
  if (self.is_contiguous()) advise_huge_pages(self.data_ptr(), self.nbytes());
}

// Fills all of `self` with produce (see fill_logical_range) in parallel. `grain` is the fewest
// elements per task; pass numel to stay on one thread.
template <typename scalar_t, typename acc_t, typename Produce>
void fill_logical(const at::Tensor& self, const Produce& produce, int64_t grain = kGrain) {
  prepare_memory(self);
  parallel_for(0, self.numel(), grain, [&](int64_t begin, int64_t end) {
    fill_logical_range<scalar_t, acc_t>(self, produce, begin, end);
  });
}

}  // namespace torchinit::cpu
