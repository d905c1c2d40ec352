// Philox states drawn on the host from a torch CPU generator: the source of every CPU fill, and of
// a CUDA fill given a CPU generator (which then gives the CPU's values on the GPU).
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <ATen/core/Generator.h>

#include <mutex>
#include <optional>

#include "philox.h"

namespace torchinit {

// Draws a fresh (key, offset) from `generator`, or from torch's default CPU generator when it is
// None, so torch.manual_seed(s) and torch.Generator().manual_seed(s) give the same values and
// successive calls differ.
inline PhiloxState draw_philox_state(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  const uint64_t key = gen->random64();
  const uint64_t offset = gen->random64();
  return {key, offset};
}

}  // namespace torchinit
