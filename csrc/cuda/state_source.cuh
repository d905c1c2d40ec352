// Where a GPU fill's Philox state comes from. A CUDA generator gives its philox state (seed,
// offset), read by the kernel at run time, so fills follow torch.cuda.manual_seed and can be
// captured in CUDA graphs. A CPU generator gives the state a CPU fill would draw, drawn on the
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

C10_HOST_DEVICE inline PhiloxState state_of_cuda_generator(uint64_t seed, uint64_t offset) {
  return {seed ^ kSeedMix, offset};
}

// The Philox state of one fill. Known on the host (a CPU generator's, or a CUDA generator's outside
// graph capture), it travels with its round keys in the kernel's parameters; in a captured graph
// it is read from the generator at run time.
struct StateSource {
  PhiloxRoundKeys known;  // unless captured
  at::PhiloxCudaState cuda;
  bool captured;
};

// Draws the state source of one fill of `self` (a CUDA tensor) and advances the generator.
inline StateSource draw_state_source(const at::Tensor& self,
                                     const std::optional<at::Generator>& generator) {
  if (generator.has_value() && generator->device().is_cpu()) {
    return {round_keys(draw_philox_state(generator)), {}, false};
  }
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      generator, at::cuda::detail::getDefaultCUDAGenerator(self.get_device()));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  const at::PhiloxCudaState cuda = gen->philox_cuda_state(kOffsetStep);
  if (cuda.captured_) return {{}, cuda, true};
  return {round_keys(state_of_cuda_generator(cuda.seed_.val, cuda.offset_.val)), {}, false};
}

__device__ inline PhiloxState captured_state(const at::PhiloxCudaState& cuda) {
  const std::tuple<uint64_t, uint64_t> seed_offset = at::cuda::philox::unpack(cuda);
  return state_of_cuda_generator(std::get<0>(seed_offset), std::get<1>(seed_offset));
}

__device__ inline PhiloxState resolve(const StateSource& source) {
  if (source.captured) return captured_state(source.cuda);
  return source.known;
}

// f(state) with the fill's state and its round keys, or, in a captured graph, the plain state,
// whose round keys are computed as needed: two copies of f, so that a kernel's own parameters are
// operands of its Philox rounds whenever the state is known on the host.
template <typename F>
__device__ void with_state(const StateSource& source, const F& f) {
  if (source.captured) {
    f(captured_state(source.cuda));
  } else {
    f(source.known);
  }
}

}  // namespace torchinit::cuda
