// Counter-based random fills on the CPU: Philox blocks generated in SIMD batches, transformed by
// the shared samplers of csrc/samplers.
#pragma once

#include <algorithm>
#include <type_traits>

#include "../cpu_runtime/loops.h"
#include "../math/fused_mul_add.h"
#include "../rng/generator_state.h"
#include "../rng/philox.h"
#include "../rng/streams.h"
#include "philox_lanes.h"

namespace torchinit::cpu {

// Blocks blocks[0 .. Lanes), transformed by dist into out, Dist::kPerBlock values each, with the
// instructions of level L. The default level has no FMA instruction, so a float law that takes
// its fused multiply-add runs the batch with FmafInDouble, which vectorizes where libm's fmaf
// is a call per operation, and then recomputes with fmaf the rare blocks it flags.
template <SimdLevel L, int Lanes, typename Dist, typename acc_t>
inline void generate_batch(const Dist& dist, PhiloxState state, const uint64_t* blocks,
                           acc_t* out) {
  uint32_t words[4][Lanes];
  philox_lanes<L>(state, blocks, words);
  const Dist local = dist;  // stores to out can't change its fields: no alias checks in the loop
  const auto block = [&](int j) {
    return PhiloxBlock{{words[0][j], words[1][j], words[2][j], words[3][j]}};
  };
  if constexpr (L == SimdLevel::kDefault && std::is_same_v<acc_t, float> &&
                std::is_invocable_v<const Dist&, PhiloxBlock, float*, FmafInDouble>) {
    uint32_t hard[Lanes];
    for (int j = 0; j < Lanes; ++j) {
      uint32_t h = 0;
      local(block(j), out + j * Dist::kPerBlock, FmafInDouble{&h});
      hard[j] = h;
    }
    for (int j = 0; j < Lanes; ++j) {
      if (hard[j]) local(block(j), out + j * Dist::kPerBlock);
    }
  } else {
    for (int j = 0; j < Lanes; ++j) local(block(j), out + j * Dist::kPerBlock);
  }
}

// Writes the values of logical elements [begin, end) of a fill with `dist` to dst: whole batches
// straight to dst, the partial ones at the ends through a buffer.
template <SimdLevel L, typename acc_t, typename Dist>
inline void generate_range(const Dist& dist, PhiloxState state, acc_t* dst, int64_t begin,
                           int64_t end) {
  constexpr int64_t kPerBatch = kWideLanes * Dist::kPerBlock;
  acc_t batch[kPerBatch];
  int64_t first = begin - begin % Dist::kPerBlock;  // first element of the current batch
  for (int64_t i = begin; i < end; first += kPerBatch) {
    uint64_t blocks[kWideLanes];
    for (int j = 0; j < kWideLanes; ++j)
      blocks[j] = static_cast<uint64_t>(first / Dist::kPerBlock + j);
    const int64_t stop = std::min(end, first + kPerBatch);
    if (i == first && stop == first + kPerBatch) {
      generate_batch<L, kWideLanes>(dist, state, blocks, dst + (i - begin));
    } else {
      generate_batch<L, kWideLanes>(dist, state, blocks, batch);
      std::copy(batch + (i - first), batch + (stop - first), dst + (i - begin));
    }
    i = stop;
  }
}

// generate_range with the instructions of the current SIMD level.
template <typename acc_t, typename Dist>
void generate_range(const Dist& dist, PhiloxState state, acc_t* dst, int64_t begin, int64_t end) {
  with_simd_level(
      [&](auto level) { generate_range<decltype(level)::value>(dist, state, dst, begin, end); });
}

// The offsets k < n with x[k] NaN, ascending, to out (room for n + 16); returns their count.
// AVX-512 compresses 16 offsets at a time and AVX2 skips 8 numbers at a time, so the scan costs a
// small fraction of the fill. float only, as TruncNormalWide, the one user.
inline int32_t find_nans_scalar(const float* x, int32_t begin, int32_t n, int32_t* out,
                                int32_t count) {
  for (int32_t k = begin; k < n; ++k) {
    out[count] = k;
    count += x[k] != x[k];
  }
  return count;
}

#if TORCHINIT_X86_SIMD
TORCHINIT_TARGET_AVX512 inline int32_t find_nans_avx512(const float* x, int32_t n, int32_t* out) {
  __m512i offsets = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int32_t count = 0;
  for (int32_t k = 0; k < n; k += 16) {
    const __mmask16 valid = static_cast<__mmask16>(n - k >= 16 ? 0xFFFF : (1u << (n - k)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(valid, x + k);
    const __mmask16 nan = _mm512_mask_cmp_ps_mask(valid, v, v, _CMP_UNORD_Q);
    _mm512_storeu_si512(out + count, _mm512_maskz_compress_epi32(nan, offsets));
    count += __builtin_popcount(nan);
    offsets = _mm512_add_epi32(offsets, _mm512_set1_epi32(16));
  }
  return count;
}

TORCHINIT_TARGET_AVX2 inline int32_t find_nans_avx2(const float* x, int32_t n, int32_t* out) {
  int32_t count = 0;
  int32_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    for (unsigned nan = _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)); nan;
         nan &= nan - 1) {
      out[count++] = k + __builtin_ctz(nan);
    }
  }
  return find_nans_scalar(x, k, n, out, count);
}
#endif

template <SimdLevel L>
inline int32_t find_nans(const float* x, int32_t n, int32_t* out) {
#if TORCHINIT_X86_SIMD
  if constexpr (L == SimdLevel::kAvx512) return find_nans_avx512(x, n, out);
  if constexpr (L == SimdLevel::kAvx2) return find_nans_avx2(x, n, out);
#endif
  return find_nans_scalar(x, 0, n, out, 0);
}

// Redraws the elements [begin, end) in dst that a rejection sampler left NaN (TruncNormalWide's
// contract): attempt r = 1 .. kAttempts - 1 of element i evaluates dist on block
// stream_block(r, i) and takes the first of its values that is not NaN; the last attempt is
// dist.last_attempt of block stream_block(kAttempts, i). The pending elements of an attempt are
// batched kWideLanes at a time, so redraws run in SIMD too.
template <SimdLevel L, typename Dist>
inline void resample_rejected(const Dist& dist, PhiloxState state, float* dst, int64_t begin,
                              int64_t end) {
  TORCH_INTERNAL_ASSERT_DEBUG_ONLY(end - begin <= kBufferElements);
  int32_t pending[kBufferElements + 16];  // offsets from begin of the elements still rejected
  int64_t count = find_nans<L>(dst, static_cast<int32_t>(end - begin), pending);
  for (uint32_t attempt = 1; count > 0 && attempt < Dist::kAttempts; ++attempt) {
    int64_t still = 0;
    for (int64_t s = 0; s < count; s += kWideLanes) {
      const int64_t lanes = std::min<int64_t>(kWideLanes, count - s);
      uint64_t blocks[kWideLanes] = {};  // lanes past `lanes` compute block 0, unused
      for (int64_t j = 0; j < lanes; ++j) blocks[j] = stream_block(attempt, begin + pending[s + j]);
      float proposals[kWideLanes * Dist::kPerBlock];
      generate_batch<L, kWideLanes>(dist, state, blocks, proposals);
      for (int64_t j = 0; j < lanes; ++j) {
        const float* p = proposals + j * Dist::kPerBlock;
        int k = 0;
        while (k < Dist::kPerBlock && p[k] != p[k]) ++k;
        if (k < Dist::kPerBlock)
          dst[pending[s + j]] = p[k];
        else
          pending[still++] = pending[s + j];
      }
    }
    count = still;
  }
  for (int64_t r = 0; r < count; ++r) {
    const uint64_t i = static_cast<uint64_t>(begin + pending[r]);
    dst[pending[r]] = dist.last_attempt(philox4x32_10(stream_block(Dist::kAttempts, i), state));
  }
}

}  // namespace torchinit::cpu
