// Counter-based random fills on the CPU: keys drawn from a torch CPU generator, Philox blocks
// generated in SIMD batches, transformed by the shared distributions of transforms.h.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <ATen/core/Generator.h>

#include <algorithm>
#include <mutex>
#include <optional>

#include "../philox.h"
#include "loops.h"
#include "philox_lanes.h"

namespace torchinit::cpu {

// Draws a fresh (key, offset) from `generator`, or from torch's default CPU generator when it is
// None, so torch.manual_seed(s) and torch.Generator().manual_seed(s) give the same values and
// successive calls differ.
inline PhiloxKey draw_philox_key(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  const uint64_t key = gen->random64();
  const uint64_t offset = gen->random64();
  return {key, offset};
}

// Blocks blocks[0 .. kLanes), transformed by dist into out, Dist::kPerBlock values each.
template <typename Dist, typename acc_t>
TORCHINIT_SIMD_CLONES void generate_batch(const Dist& dist, PhiloxKey key, const uint64_t* blocks,
                                          acc_t* out) {
  uint32_t words[4][kLanes];
  philox_lanes(key, blocks, words);
  const Dist local = dist;  // stores to out can't change its fields: no alias checks in the loop
  for (int j = 0; j < kLanes; ++j) {
    local(PhiloxBlock{{words[0][j], words[1][j], words[2][j], words[3][j]}},
         out + j * Dist::kPerBlock);
  }
}

// Writes the values of logical elements [begin, end) of a fill with `dist` to dst.
template <typename acc_t, typename Dist>
void generate_range(const Dist& dist, PhiloxKey key, acc_t* dst, int64_t begin, int64_t end) {
  constexpr int64_t kPerBatch = kLanes * Dist::kPerBlock;
  acc_t batch[kPerBatch];
  int64_t first = begin - begin % Dist::kPerBlock;  // first element of the current batch
  for (int64_t i = begin; i < end; first += kPerBatch) {
    uint64_t blocks[kLanes];
    for (int j = 0; j < kLanes; ++j) blocks[j] = static_cast<uint64_t>(first / Dist::kPerBlock + j);
    generate_batch(dist, key, blocks, batch);
    const int64_t stop = std::min(end, first + kPerBatch);
    std::copy(batch + (i - first), batch + (stop - first), dst + (i - begin));
    i = stop;
  }
}

// Fills `self` (any strides) with dist, each element a pure function of (key, offset, index).
template <typename scalar_t, typename acc_t, typename Dist>
void random_fill(const at::Tensor& self, const Dist& dist, PhiloxKey key) {
  fill_logical<scalar_t, acc_t>(self, [&](acc_t* dst, int64_t begin, int64_t end) {
    generate_range<acc_t>(dist, key, dst, begin, end);
  });
}

}  // namespace torchinit::cpu
