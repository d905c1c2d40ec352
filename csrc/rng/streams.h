// The stream policy of the RNG contract (docs/rng-contract.md, "Blocks and streams"): which Philox
// blocks each kind of draw of a fill uses, so that no two draws of one call share a counter.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace torchinit {

// A fill's main values use blocks below 2^56 (stream 0). Draws beyond those (trunc_normal_'s
// retries, sparse_'s zero positions) use stream s >= 1, block (s << 56) | index, so every draw
// of a call has a counter of its own and stays a pure function of (key, offset, index).
constexpr int kStreamShift = 56;

C10_HOST_DEVICE inline uint64_t stream_block(uint32_t stream, uint64_t index) {
  return (static_cast<uint64_t>(stream) << kStreamShift) | index;
}

}  // namespace torchinit
