// CUDA kernels of the elementwise fills: uniform_, normal_, trunc_normal_ (one launch each, Philox
// state from the generator at run time, so they can be captured in CUDA graphs), and
// fill_many_, which fills a list of tensors in one launch per batch of one (dtype, law): thread
// blocks take chunks of any of the batch's targets, as in apex's multi_tensor_apply. The
// per-thread work is fill_spans.h's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../plan/elementwise_fill.h"
#include "../plan/fill_many.h"
#include "../plan/shard_index.h"
#include "fill_spans.h"
#include "launch.cuh"
#include "state_source.cuh"

namespace torchinit::cuda {
namespace {

// The thread block's redraw queue, emptied; in a function that is no template, so that both of
// fill_one_kernel's copies of the loop (kRoundKeysInParameters) share one. Every thread of the
// block calls it, before its first queued fill.
__device__ RedrawQueue& empty_redraw_queue() {
  __shared__ RedrawQueue queue;
  if (threadIdx.x == 0) queue.pushed = queue.drained = 0;
  __syncthreads();
  return queue;
}

// A queued fill (QueuedWideFill, QueuedWideChunk): its rounds, and after every kRoundsPerDrain of
// them and the last, the block's drain of its redraw queue between two barriers: the first orders
// the placeholders and pushes before the drain's redraws and reads, the second the reads before
// the next rounds' pushes (this fill's or the block's next one's) overwrite the entries and
// before mark_drained.
template <typename QueuedFill>
__device__ void fill_queued(QueuedFill fill, RedrawQueue& queue) {
  for (int32_t r = 0; r < fill.rounds();) {
    const int32_t drain = next_drain(r, fill.rounds());
    fill.run(r, drain, queue);
    r = drain;
    __syncthreads();
    const uint32_t pushed = fill.drain(queue, threadIdx.x);
    __syncthreads();
    if (threadIdx.x == 0) queue.mark_drained(pushed);
  }
}

// Two kernels per (dtype, law) for single fills, so each holds only its own law's registers:
// fill_one_kernel for the contiguous tensors that takes_contiguous (32-bit indices, no layout
// checks), fill_one_strided_kernel for the others (strided views, misaligned data, 2^31 elements
// and more). At most 64 registers, so 4 thread blocks fit on an SM, which the truncated normal's
// laws would exceed unbounded (docs/cuda.md, "Kernels"). The wide regime's queued fill at most
// 48, so that 5 fit, as before its loop of whole spans took 50 (4 blocks) for one instruction
// less a span.
template <typename scalar_t, typename Dist>
__global__ void __launch_bounds__(kThreads, kQueuesRedraws<Dist> ? 5 : 4)
    fill_one_kernel(scalar_t* data, int32_t numel, Dist dist,
                    const __grid_constant__ StateSource source) {
  const auto with_fill_state = [&](const auto& fill) {
    if constexpr (kRoundKeysInParameters<Dist>) {
      with_state(source, fill);
    } else {
      fill(resolve(source));
    }
  };
  if constexpr (kQueuesRedraws<Dist>) {
    const int32_t thread = blockIdx.x * blockDim.x + threadIdx.x;
    const int32_t threads = gridDim.x * blockDim.x;
    with_fill_state([&](const auto& state) {
      using State = std::decay_t<decltype(state)>;
      fill_queued(QueuedWideFill<scalar_t, State>(data, numel, dist, state, thread, threads),
                  empty_redraw_queue());
    });
  } else {
    with_fill_state([&](const auto& state) {
      fill_contiguous(data, numel, dist, state, blockIdx.x * blockDim.x + threadIdx.x,
                      gridDim.x * blockDim.x);
    });
  }
}

template <typename scalar_t, typename Dist>
__global__ void fill_one_strided_kernel(FillDesc target, Dist dist, StateSource source) {
  const PhiloxState state = resolve(source);
  const int64_t chunks = (target.numel + kChunk - 1) / kChunk;
  for_each_block_index(chunks, [&](int64_t c) {
    fill_chunk_with<scalar_t>(target, dist, state, c * kChunk, chunk_end(target, c), threadIdx.x,
                              blockDim.x);
  });
}

// Transposed matrices (TransposedTiles): a thread block a tile at a time, through shared memory.
template <typename scalar_t, typename Dist>
__global__ void __launch_bounds__(kThreads)
    fill_transposed_kernel(TransposedTiles target, Dist dist, StateSource source) {
  static_assert(kTileThreads == kThreads);
  __shared__ Tile<at::opmath_type<scalar_t>> tile;
  const PhiloxState state = resolve(source);
  for_each_block_index(target.tiles(), [&](int64_t b) {
    tile_values(target, dist, state, b, threadIdx.x, tile);
    __syncthreads();
    tile_stores<scalar_t>(target, b, threadIdx.x, tile);
    __syncthreads();
  });
}

// fill_many_'s kernel for one (dtype, law): a batch of targets, thread blocks taking any target's
// chunks (the wide trunc_normal_ regime's: queued, QueuedWideChunk; a block's threads all take
// the same chunks, so all meet at its barriers). At most 64 registers, as fill_one_kernel.
template <typename scalar_t, typename Dist>
__global__ void __launch_bounds__(kThreads, 4)
    fill_many_kernel(const __grid_constant__ FillBatch<Dist> batch) {
  if constexpr (kQueuesRedraws<Dist>) {
    RedrawQueue& queue = empty_redraw_queue();
    for_each_block_index(batch.chunks(), [&](int64_t c) {
      fill_queued(QueuedWideChunk<scalar_t, Dist>(batch, c, threadIdx.x), queue);
    });
  } else {
    // kThreads, the launch's block size, rather than blockDim.x: a constant stride.
    for_each_block_index(batch.chunks(), [&](int64_t c) {
      fill_batch_chunk<scalar_t>(batch, c, threadIdx.x, kThreads);
    });
  }
}

void fill_one(const at::Tensor& self, const ElementwiseFill& fill,
              const std::optional<at::Generator>& generator) {
  if (self.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(self.device());
  const LaunchTarget target = launch_target(self, fill, ShardIndex());
  const StateSource source = draw_state_source(self, generator);
  const FillDesc& desc = target.desc;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  TORCHINIT_DISPATCH_FLOAT_TYPES(self.scalar_type(), "fill_", [&] {
    visit_law<at::opmath_type<scalar_t>>(fill, [&](const auto& dist) {
      using Dist = std::decay_t<decltype(dist)>;
      if (takes_contiguous(desc)) {
        const auto kernel = fill_one_kernel<scalar_t, Dist>;
        kernel<<<grid_for_threads(kernel, desc.numel / kSpan), kThreads, 0, stream>>>(
            static_cast<scalar_t*>(desc.data), static_cast<int32_t>(desc.numel), dist, source);
      } else if (const auto tiles = transposed_tiles(desc, self.element_size())) {
        const auto kernel = fill_transposed_kernel<scalar_t, Dist>;
        kernel<<<grid_for(kernel, tiles->tiles()), kThreads, 0, stream>>>(*tiles, dist, source);
      } else {
        const auto kernel = fill_one_strided_kernel<scalar_t, Dist>;
        kernel<<<grid_for(kernel, num_chunks(desc.numel)), kThreads, 0, stream>>>(desc, dist,
                                                                                  source);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  copy_temporaries({target});
}

void uniform_cuda(at::Tensor& self, double a, double b, std::optional<at::Generator> generator) {
  fill_one(self, uniform_fill(self, a, b), generator);
}

void normal_cuda(at::Tensor& self, double mean, double std,
                 std::optional<at::Generator> generator) {
  fill_one(self, normal_fill(self, mean, std), generator);
}

void trunc_normal_cuda(at::Tensor& self, double mean, double std, double a, double b,
                       std::optional<at::Generator> generator) {
  fill_one(self, trunc_normal_fill(self, mean, std, a, b), generator);
}

// One launch per batch of targets of one (dtype, law), its descriptions in the kernel's
// parameters: no copy to the GPU and no host synchronization, so it can be captured in a CUDA
// graph.
void fill_many_cuda(at::TensorList selves, const std::vector<std::string>& laws,
                    c10::ArrayRef<double> params, c10::IntArrayRef states,
                    c10::IntArrayRef full_sizes, c10::IntArrayRef shard_starts) {
  const std::vector<FillTarget> targets =
      fill_many_targets(selves, laws, params, states, full_sizes, shard_starts);
  const at::Device device = selves.empty() ? at::Device(at::kCUDA) : selves[0].device();
  for (size_t t = 0; t < selves.size(); ++t) {
    TORCH_CHECK_VALUE(selves[t].device() == device, "fill_many_: all tensors must be on one ",
                      "device; tensor 0 is on ", device, ", tensor ", t, " on ",
                      selves[t].device());
  }
  const c10::cuda::CUDAGuard guard(device);
  std::vector<LaunchTarget> launch_targets;
  for (const FillTarget& target : targets) {
    if (target.self.numel() > 0)
      launch_targets.push_back(launch_target(target.self, target.fill, target.shard));
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  for_each_batch(launch_targets, [&](auto tag, const auto& batch) {
    using Dist = std::decay_t<decltype(batch.dists[0])>;
    const auto kernel = fill_many_kernel<typename decltype(tag)::type, Dist>;
    kernel<<<grid_for(kernel, batch.chunks()), kThreads, 0, stream>>>(batch);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  copy_temporaries(launch_targets);
}

// Read on the host, so not during graph capture.
std::vector<int64_t> philox_state_cuda(const at::Tensor& self,
                                       std::optional<at::Generator> generator) {
  const StateSource source = draw_state_source(self, generator);
  TORCH_CHECK(!source.captured,
              "philox_state: a CUDA generator's state can't be read during CUDA graph capture");
  return {static_cast<int64_t>(source.known.key), static_cast<int64_t>(source.known.offset)};
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CUDA, m) {
  m.impl("uniform_", &uniform_cuda);
  m.impl("normal_", &normal_cuda);
  m.impl("trunc_normal_", &trunc_normal_cuda);
  m.impl("fill_many_", &fill_many_cuda);
  m.impl("philox_state", &philox_state_cuda);
}

}  // namespace torchinit::cuda
