// Where a GPU fill's Philox key comes from. A CUDA generator gives its philox state (seed,
// offset), read by the kernel at run time, so fills follow torch.cuda.manual_seed and can be
// captured in CUDA graphs. A CPU generator gives the key a CPU fill would draw, drawn on the
// host: the GPU then writes the CPU's values.
#pragma once

#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>

#include <mutex>
#include <optional>
#include <tuple>

#include "../rng/generator_state.h"

namespace torchinit::cuda {

// Each call advances the CUDA generator's offset by this much (torch asks multiples of 4): calls
// differ in the offset words of their counters.
constexpr uint64_t kOffsetStep = 4;

// torch's own kernels run Philox with the seed itself as key and counters that can coincide with
// ours; mixing the seed keeps their streams and ours apart.
constexpr uint64_t kSeedMix = 0x9E3779B97F4A7C15ull;

C10_HOST_DEVICE inline PhiloxState key_of_cuda_state(uint64_t seed, uint64_t offset) {
  return {seed ^ kSeedMix, offset};
}

struct KeySource {
  PhiloxState drawn;  // unless from_cuda_state
  at::PhiloxCudaState cuda;
  bool from_cuda_state;
};

// Draws the key source of one fill of `self` (a CUDA tensor) and advances the generator.
inline KeySource draw_key_source(const at::Tensor& self,
                                 const std::optional<at::Generator>& generator) {
  if (generator.has_value() && generator->device().is_cpu()) {
    return {draw_philox_state(generator), {}, false};
  }
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      generator, at::cuda::detail::getDefaultCUDAGenerator(self.get_device()));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return {{}, gen->philox_cuda_state(kOffsetStep), true};
}

__device__ inline PhiloxState resolve(const KeySource& source) {
  if (!source.from_cuda_state) return source.drawn;
  const std::tuple<uint64_t, uint64_t> seed_offset = at::cuda::philox::unpack(source.cuda);
  return key_of_cuda_state(std::get<0>(seed_offset), std::get<1>(seed_offset));
}

}  // namespace torchinit::cuda
