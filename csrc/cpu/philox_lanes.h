// Philox4x32-10 on kLanes (or kWideLanes) blocks at once, with the instructions of a SIMD level
// (cpu_runtime/simd.h). Integer arithmetic only: every level returns exactly philox4x32_10's words.
#pragma once

#include <cstdint>

#include "../cpu_runtime/simd.h"
#include "../rng/philox.h"

namespace torchinit::cpu {

constexpr int kLanes = 16;
// The batch of sequential fills: two independent groups of kLanes per call, whose rounds
// interleave, so one group's multiplies run while the other waits on its own (each round's
// chain is latency-bound; benchmarks/README.md, "Tuning constants").
constexpr int kWideLanes = 2 * kLanes;

namespace philox_impl {

template <int N>
inline void philox_scalar(PhiloxState state, const uint64_t* blocks, uint32_t (*words)[N]) {
  for (int j = 0; j < N; ++j) {
    const PhiloxBlock b = philox4x32_10(blocks[j], state);
    for (int k = 0; k < 4; ++k) words[k][j] = b.w[k];
  }
}

#if TORCHINIT_X86_SIMD
// High and low halves of the 32x32 products a[i] * m, lane by lane.
TORCHINIT_TARGET_AVX2 inline void mulhilo(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// N / 8 groups of 8 blocks, round by round. Each 32-bit word sits in the low half of a 64-bit
// lane, where vpmuludq gives its whole product: the high word is one shift away and the low word
// is the product itself, its high half left as garbage that no later step reads (vpmuludq and
// the final narrowing look at low halves only). A round costs 6 instructions per 8 blocks,
// against 8 per 8 with 32-bit lanes, whose products need splitting and blending back. (AVX2
// keeps 32-bit lanes: its blends are cheap, so 64-bit lanes save it nothing; docs/design.md.)
template <int N>
TORCHINIT_TARGET_AVX512 inline void philox_avx512(PhiloxState state, const uint64_t* blocks,
                                                  uint32_t (*words)[N]) {
  constexpr int G = N / 8;
  const __m512i m0 = _mm512_set1_epi64(philox_detail::kMul0);
  const __m512i m1 = _mm512_set1_epi64(philox_detail::kMul1);
  __m512i c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; ++g) {
    c0[g] = _mm512_loadu_si512(blocks + 8 * g);  // the block number's low word, low half
    c1[g] = _mm512_srli_epi64(c0[g], 32);
    c2[g] = _mm512_set1_epi64(static_cast<uint32_t>(state.offset));
    c3[g] = _mm512_set1_epi64(state.offset >> 32);
  }
  for (int r = 0; r < 10; ++r) {
    const __m512i k0 = _mm512_set1_epi32(static_cast<int>(round_key0(state, r)));
    const __m512i k1 = _mm512_set1_epi32(static_cast<int>(round_key1(state, r)));
    for (int g = 0; g < G; ++g) {
      const __m512i product0 = _mm512_mul_epu32(c0[g], m0);
      const __m512i product1 = _mm512_mul_epu32(c2[g], m1);
      // 0x96: a ^ b ^ c
      c0[g] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(product1, 32), c1[g], k0, 0x96);
      c2[g] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(product0, 32), c3[g], k1, 0x96);
      c1[g] = product1;
      c3[g] = product0;
    }
  }
  const __m512i* counters[4] = {c0, c1, c2, c3};
  for (int k = 0; k < 4; ++k) {
    for (int g = 0; g < G; ++g) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[k] + 8 * g),
                          _mm512_cvtepi64_epi32(counters[k][g]));  // the low halves
    }
  }
}

// Groups of 8 lanes, kAvx2Interleave at a time: each round's multiply chain is latency-bound, so
// independent groups fill the pipeline (benchmarks/README.md, "Tuning constants").
constexpr int kAvx2Interleave = 2;

template <int N>
TORCHINIT_TARGET_AVX2 inline void philox_avx2(PhiloxState state, const uint64_t* blocks,
                                              uint32_t (*words)[N]) {
  constexpr int G = kAvx2Interleave;
  static_assert(N % (8 * G) == 0);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(philox_detail::kMul0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(philox_detail::kMul1));
  for (int group = 0; group < N; group += 8 * G) {
    __m256i c0[G], c1[G], c2[G], c3[G];
    for (int g = 0; g < G; ++g) {
      // Low and high words of 8 block numbers: [0 2 | 4 6] of each half, then lanes in order.
      const float* b = reinterpret_cast<const float*>(blocks + group + 8 * g);
      const __m256 first = _mm256_loadu_ps(b);
      const __m256 second = _mm256_loadu_ps(b + 8);
      const __m256i lo = _mm256_castps_si256(_mm256_shuffle_ps(first, second, 0x88));
      const __m256i hi = _mm256_castps_si256(_mm256_shuffle_ps(first, second, 0xDD));
      c0[g] = _mm256_permute4x64_epi64(lo, 0xD8);
      c1[g] = _mm256_permute4x64_epi64(hi, 0xD8);
      c2[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(state.offset)));
      c3[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(state.offset >> 32)));
    }
    for (int r = 0; r < 10; ++r) {
      const __m256i k0 = _mm256_set1_epi32(static_cast<int>(round_key0(state, r)));
      const __m256i k1 = _mm256_set1_epi32(static_cast<int>(round_key1(state, r)));
      for (int g = 0; g < G; ++g) {
        __m256i hi0, lo0, hi1, lo1;
        mulhilo(c0[g], m0, hi0, lo0);
        mulhilo(c2[g], m1, hi1, lo1);
        c0[g] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[g]), k0);
        c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[g]), k1);
        c1[g] = lo1;
        c3[g] = lo0;
      }
    }
    for (int g = 0; g < G; ++g) {
      const int at = group + 8 * g;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[0] + at), c0[g]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[1] + at), c1[g]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[2] + at), c2[g]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[3] + at), c3[g]);
    }
  }
}
#endif

}  // namespace philox_impl

// Word k of block blocks[lane] goes to words[k][lane], for N (a multiple of 16) blocks, with the
// instructions of level L.
template <SimdLevel L, int N>
inline void philox_lanes(PhiloxState state, const uint64_t* blocks, uint32_t (*words)[N]) {
#if TORCHINIT_X86_SIMD
  if constexpr (L == SimdLevel::kAvx512) return philox_impl::philox_avx512<N>(state, blocks, words);
  if constexpr (L == SimdLevel::kAvx2) return philox_impl::philox_avx2<N>(state, blocks, words);
#endif
  philox_impl::philox_scalar<N>(state, blocks, words);
}

}  // namespace torchinit::cpu
