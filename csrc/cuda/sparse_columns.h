// sparse_ on the GPU as host-device code: one thread per column picks the column's rows
// (Floyd's algorithm, sparse_draws.h), then one thread per element writes it. The kernels in
// sparse.cu only run these; tests run them on the host against the CPU kernel.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "../samplers/sparse_draws.h"
#include "../samplers/uniform_normal.h"

namespace torchinit::cuda {

C10_HOST_DEVICE inline int popcount64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __popcll(x);
#else
  return __builtin_popcountll(x);
#endif
}

// Bit c % 64 of masks[(c / 64) * rows + r] says whether (r, c) is one of its column's chosen
// `count` rows: the zeros, or the nonzeros when those are fewer.
struct SparseColumns {
  int64_t rows, cols, count;
  bool chosen_are_zeros;

  C10_HOST_DEVICE int64_t groups() const { return (cols + 63) / 64; }

  // The bits of real columns in group g's masks.
  C10_HOST_DEVICE uint64_t columns_of(int64_t g) const {
    const int64_t width = cols - 64 * g;
    return width >= 64 ? ~uint64_t{0} : (uint64_t{1} << width) - 1;
  }

  C10_HOST_DEVICE uint64_t nonzeros(const uint64_t* masks, int64_t g, int64_t r) const {
    return nonzero_bits(masks[g * rows + r], chosen_are_zeros, columns_of(g));
  }

  // Floyd's algorithm for `column`: test_and_set(r) sets the column's bit of row r's mask and
  // returns whether it was set already.
  template <typename TestAndSet>
  C10_HOST_DEVICE void choose(PhiloxState state, int64_t column,
                              const TestAndSet& test_and_set) const {
    const int64_t batches = (count + kFloydBatch - 1) / kFloydBatch;
    for (int64_t batch = 0; batch < batches; ++batch) {
      const int64_t d0 = batch * kFloydBatch;
      const int64_t draws = count - d0 < kFloydBatch ? count - d0 : kFloydBatch;
      uint32_t words[kFloydBatch];  // draw d0 + i: word i / 16 of block i % 16
      const uint64_t first = floyd_batch_block(column, batches, batch);
      for (int64_t j = 0; j < kFloydBlocksPerBatch && j < draws; ++j) {
        const PhiloxBlock b = philox4x32_10(first + j, state);
        for (int w = 0; w < 4; ++w) words[w * kFloydBlocksPerBatch + j] = b.w[w];
      }
      for (int64_t i = 0; i < draws; ++i) {
        const uint64_t n = static_cast<uint64_t>(rows - count + d0 + i + 1);
        const uint64_t row = floyd_word_rejected(words[i], n)
                                 ? floyd_fallback_draw(state, column, count, d0 + i, n)
                                 : floyd_word_draw(words[i], n);
        if (test_and_set(row)) test_and_set(n - 1);
      }
    }
  }

  // Element (r, c): 0, or normal number j, the nonzero's rank in row-major order. ends[r * groups
  // + g] counts the nonzeros up to and including row r's group g (an inclusive scan).
  template <typename acc_t>
  C10_HOST_DEVICE acc_t value(const uint64_t* masks, const int64_t* ends,
                              const Normal<acc_t>& normal, PhiloxState state, int64_t r,
                              int64_t c) const {
    const int64_t g = c / 64;
    const int bit = static_cast<int>(c % 64);
    const uint64_t bits = nonzeros(masks, g, r);
    if (!((bits >> bit) & 1)) return acc_t(0);
    const int64_t j =
        ends[r * groups() + g] - popcount64(bits) + popcount64(bits & ((uint64_t{1} << bit) - 1));
    acc_t values[Normal<acc_t>::kPerBlock];
    normal(philox4x32_10(static_cast<uint64_t>(j / Normal<acc_t>::kPerBlock), state), values);
    return pick(values, static_cast<int>(j % Normal<acc_t>::kPerBlock));
  }
};

}  // namespace torchinit::cuda
