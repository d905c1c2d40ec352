// sparse_'s random draws, shared by every backend: Floyd's algorithm picks each column's rows
// (numbering: docs/rng-contract.md, "sparse_ numbering").
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "../rng/philox.h"
#include "../rng/streams.h"

namespace torchinit {

// What Floyd's algorithm picks in each column of a `rows`-row fill: its ceil(sparsity rows)
// zeros, or its nonzeros when those are fewer (one draw per chosen row).
struct FloydChoice {
  int64_t nonzeros;  // per column
  int64_t count;     // rows chosen per column
  bool chosen_are_zeros;
};

inline FloydChoice floyd_choice(int64_t rows, double sparsity) {
  const int64_t zeros = static_cast<int64_t>(std::ceil(sparsity * static_cast<double>(rows)));
  const bool zeros_fewer = zeros < rows - zeros;
  return {rows - zeros, zeros_fewer ? zeros : rows - zeros, zeros_fewer};
}

// Draws come in batches of 64 from 16 consecutive blocks of stream 1: draw 64 b + i of a column
// is word i / 16 of block i % 16 of its batch b.
constexpr int64_t kFloydBlocksPerBatch = 16;
constexpr int64_t kFloydBatch = 4 * kFloydBlocksPerBatch;

// The first block of batch `batch` of `column`, whose set takes `batches` batches.
C10_HOST_DEVICE inline uint64_t floyd_batch_block(int64_t column, int64_t batches, int64_t batch) {
  return stream_block(1, static_cast<uint64_t>((column * batches + batch) * kFloydBlocksPerBatch));
}

// floor(x n / 2^32) from [0, n) is exactly uniform unless x n mod 2^32 < 2^32 mod n (Lemire,
// "Fast random integer generation in an interval", 2019), or n needs more than 32 bits.
C10_HOST_DEVICE inline bool floyd_word_rejected(uint32_t x, uint64_t n) {
  constexpr uint64_t kWordRange = uint64_t{1} << 32;
  return n >= kWordRange || (static_cast<uint64_t>(x) * n) % kWordRange < kWordRange % n;
}

C10_HOST_DEVICE inline uint64_t floyd_word_draw(uint32_t x, uint64_t n) {
  return (static_cast<uint64_t>(x) * n) >> 32;
}

// Draw d of `column` (set size `count`) from [0, n) when its word was rejected: the high half of
// the 128-bit product of n and the 64-bit word (w1:w0) of stream 2's block column * count + d
// (bias below n / 2^64).
C10_HOST_DEVICE inline uint64_t floyd_fallback_draw(PhiloxState state, int64_t column,
                                                    int64_t count, int64_t d, uint64_t n) {
  const PhiloxBlock y =
      philox4x32_10(stream_block(2, static_cast<uint64_t>(column * count + d)), state);
  const uint64_t bits = (static_cast<uint64_t>(y.w[1]) << 32) | y.w[0];
#if defined(__CUDA_ARCH__)
  return __umul64hi(bits, n);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
#endif
}

// The nonzeros among the 64 columns of a row mask: the chosen rows' bits, or the others' when the
// chosen are the zeros (`columns`: the bits of real columns).
C10_HOST_DEVICE inline uint64_t nonzero_bits(uint64_t chosen, bool chosen_are_zeros,
                                             uint64_t columns) {
  return chosen_are_zeros ? ~chosen & columns : chosen;
}

}  // namespace torchinit
