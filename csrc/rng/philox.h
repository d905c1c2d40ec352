// Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11).
// Plain integer arithmetic only, so the same code runs on host and device and gives the
// same bits everywhere.
#pragma once

#include <c10/macros/Macros.h>
#include <cstdint>

#include "../math/unroll.h"

namespace torchinit {

// What one call of a fill draws from its generator. Block `b` of a fill is
// philox(counter = {lo(b), hi(b), lo(offset), hi(offset)}, key): the value of every element is a
// pure function of (key, offset, element index).
struct PhiloxState {
  uint64_t key;
  uint64_t offset;
};

struct PhiloxBlock {
  uint32_t w[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;
}  // namespace philox_detail

// One of the ten rounds: two 32x32->64 multiplies, the Feistel-like swap, and the key bump.
C10_HOST_DEVICE inline void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                         uint32_t k0, uint32_t k1) {
  using namespace philox_detail;
#ifdef __CUDA_ARCH__
  // The same products from mul.hi and mul.lo: for a 64-bit multiply nvcc also emits 64-bit adds
  // of zero.
  const uint64_t p0 = static_cast<uint64_t>(__umulhi(kMul0, c0)) << 32 | kMul0 * c0;
  const uint64_t p1 = static_cast<uint64_t>(__umulhi(kMul1, c2)) << 32 | kMul1 * c2;
#else
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
#endif
  c0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
  c2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
  c1 = static_cast<uint32_t>(p1);
  c3 = static_cast<uint32_t>(p0);
}

// Round r uses the key bumped r times by the Weyl constants. A PhiloxState adds them when a round
// needs them; PhiloxRoundKeys holds the ten pairs computed once, so that a GPU kernel reads them
// as operands from its parameters instead of adding them again for every Philox block.
C10_HOST_DEVICE inline uint32_t round_key0(const PhiloxState& k, int r) {
  return static_cast<uint32_t>(k.key) + static_cast<uint32_t>(r) * philox_detail::kWeyl0;
}
C10_HOST_DEVICE inline uint32_t round_key1(const PhiloxState& k, int r) {
  return static_cast<uint32_t>(k.key >> 32) + static_cast<uint32_t>(r) * philox_detail::kWeyl1;
}

struct PhiloxRoundKeys : PhiloxState {
  uint32_t k0[10];
  uint32_t k1[10];
};

C10_HOST_DEVICE inline PhiloxRoundKeys round_keys(const PhiloxState& k) {
  PhiloxRoundKeys keys{k, {}, {}};
  TORCHINIT_UNROLL
  for (int r = 0; r < 10; ++r) {
    keys.k0[r] = round_key0(k, r);
    keys.k1[r] = round_key1(k, r);
  }
  return keys;
}

C10_HOST_DEVICE inline uint32_t round_key0(const PhiloxRoundKeys& k, int r) {
  return k.k0[r];
}
C10_HOST_DEVICE inline uint32_t round_key1(const PhiloxRoundKeys& k, int r) {
  return k.k1[r];
}

namespace philox_detail {
template <typename State>
C10_HOST_DEVICE inline PhiloxBlock rounds(uint64_t block, const State& k) {
  uint32_t c0 = static_cast<uint32_t>(block);
  uint32_t c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(k.offset);
  uint32_t c3 = static_cast<uint32_t>(k.offset >> 32);
  TORCHINIT_UNROLL
  for (int r = 0; r < 10; ++r) philox_round(c0, c1, c2, c3, round_key0(k, r), round_key1(k, r));
  return PhiloxBlock{{c0, c1, c2, c3}};
}
}  // namespace philox_detail

// The same words from either form of the state. The plain state, two words, is passed by value; the
// round keys by reference, so that a kernel's parameters are read where they lie.
C10_HOST_DEVICE inline PhiloxBlock philox4x32_10(uint64_t block, PhiloxState k) {
  return philox_detail::rounds(block, k);
}
C10_HOST_DEVICE inline PhiloxBlock philox4x32_10(uint64_t block, const PhiloxRoundKeys& k) {
  return philox_detail::rounds(block, k);
}

}  // namespace torchinit
