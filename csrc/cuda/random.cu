// CUDA kernels of the elementwise fills: uniform_, normal_, trunc_normal_ (one launch each, key
// from the generator's philox state at run time, so they can be captured in CUDA graphs), and
// fill_many_, which fills a list of tensors in one launch: thread blocks take chunks of any
// target, as in apex's multi_tensor_apply. The per-thread work is fill_spans.h's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "../plan/elementwise_fill.h"
#include "../plan/fill_many.h"
#include "../plan/shard_index.h"
#include "fill_spans.h"
#include "key_source.cuh"
#include "launch.cuh"

namespace torchinit::cuda {
namespace {

// Two kernels per (dtype, law) for single fills, so each holds only its own law's registers:
// fill_one_kernel for the contiguous tensors that takes_contiguous (32-bit indices, no layout
// checks), fill_one_strided_kernel for the others (strided views, misaligned data, 2^31 elements
// and more). At most 64 registers, so 4 blocks fit on an SM, which the truncated normal's laws
// would exceed unbounded (docs/cuda.md, "Kernels").
template <typename scalar_t, typename Dist>
__global__ void __launch_bounds__(kThreads, 4)
    fill_one_kernel(scalar_t* data, int32_t numel, Dist dist, KeySource source) {
  fill_contiguous(data, numel, dist, resolve(source), blockIdx.x * blockDim.x + threadIdx.x,
                  gridDim.x * blockDim.x);
}

template <typename scalar_t, typename Dist>
__global__ void fill_one_strided_kernel(FillDesc target, Dist dist, KeySource source) {
  const PhiloxState state = resolve(source);
  const int64_t chunks = (target.numel + kChunk - 1) / kChunk;
  for_each_block_index(chunks, [&](int64_t c) {
    fill_chunk_with<scalar_t>(target, dist, state, c * kChunk, chunk_end(target, c), threadIdx.x,
                              blockDim.x);
  });
}

// first_chunk[t]: the first of target t's chunks in the launch's numbering; first_chunk[n]: all.
// It holds every law's code: at most 128 registers (unbounded, ptxas takes 240), so 2 blocks fit
// on an SM.
__global__ void __launch_bounds__(kThreads, 2)
    fill_many_kernel(const FillDesc* targets, const int64_t* first_chunk, int64_t num_targets) {
  const int64_t chunks = first_chunk[num_targets];
  for_each_block_index(chunks, [&](int64_t c) {
    int64_t t = 0;  // the last target with first_chunk[t] <= c
    for (int64_t hi = num_targets; hi - t > 1;) {
      const int64_t mid = (t + hi) / 2;
      (first_chunk[mid] <= c ? t : hi) = mid;
    }
    const FillDesc& target = targets[t];
    const int64_t local = c - first_chunk[t];
    fill_chunk_any(target, target.fill.state, local * kChunk, chunk_end(target, local), threadIdx.x,
                   blockDim.x);
  });
}

void fill_one(const at::Tensor& self, const ElementwiseFill& fill,
              const std::optional<at::Generator>& generator) {
  if (self.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(self.device());
  const PlannedTarget target = plan_target(self, fill, ShardIndex());
  const KeySource source = draw_key_source(self, generator);
  const FillDesc& desc = target.desc;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "fill_", [&] {
    visit_law<at::opmath_type<scalar_t>>(fill, [&](const auto& dist) {
      using Dist = std::decay_t<decltype(dist)>;
      if (takes_contiguous(desc)) {
        const auto kernel = fill_one_kernel<scalar_t, Dist>;
        kernel<<<grid_for_threads(kernel, desc.numel / kSpan), kThreads, 0, stream>>>(
            static_cast<scalar_t*>(desc.data), static_cast<int32_t>(desc.numel), dist, source);
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

// The targets' descriptions and chunk numbering go to the GPU in one asynchronous copy from
// pinned memory. (So, unlike the single ops, fill_many_ can't be captured in a CUDA graph.)
void fill_many_cuda(at::TensorList selves, const std::vector<std::string>& laws,
                    c10::ArrayRef<double> params, c10::IntArrayRef keys,
                    c10::IntArrayRef full_sizes, c10::IntArrayRef block_starts) {
  const std::vector<FillTarget> targets =
      plan_fill_many(selves, laws, params, keys, full_sizes, block_starts);
  const at::Device device = selves.empty() ? at::Device(at::kCUDA) : selves[0].device();
  for (size_t t = 0; t < selves.size(); ++t) {
    TORCH_CHECK_VALUE(selves[t].device() == device, "fill_many_: all tensors must be on one ",
                      "device; tensor 0 is on ", device, ", tensor ", t, " on ",
                      selves[t].device());
  }
  const c10::cuda::CUDAGuard guard(device);
  std::vector<PlannedTarget> planned;
  for (const FillTarget& target : targets) {
    if (target.self.numel() > 0)
      planned.push_back(plan_target(target.self, target.fill, target.shard));
  }
  if (planned.empty()) return;
  const size_t n = planned.size();
  const size_t desc_bytes = n * sizeof(FillDesc);
  at::Tensor staging = at::empty({static_cast<int64_t>(desc_bytes + (n + 1) * sizeof(int64_t))},
                                 at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  auto* descs = reinterpret_cast<FillDesc*>(staging.data_ptr());
  auto* first_chunk = reinterpret_cast<int64_t*>(staging.data_ptr<uint8_t>() + desc_bytes);
  first_chunk[0] = 0;
  for (size_t t = 0; t < n; ++t) {
    std::memcpy(&descs[t], &planned[t].desc, sizeof(FillDesc));
    first_chunk[t + 1] = first_chunk[t] + num_chunks(planned[t].desc.numel);
  }
  const int64_t chunks = first_chunk[n];
  const at::Tensor on_device =
      staging.to(at::TensorOptions().device(device), /*non_blocking=*/true);
  fill_many_kernel<<<grid_for(fill_many_kernel, chunks), kThreads, 0,
                     c10::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const FillDesc*>(on_device.data_ptr()),
      reinterpret_cast<const int64_t*>(on_device.data_ptr<uint8_t>() + desc_bytes),
      static_cast<int64_t>(n));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  copy_temporaries(planned);
}

// Read on the host, so not during graph capture.
std::vector<int64_t> philox_key_cuda(const at::Tensor& self,
                                     std::optional<at::Generator> generator) {
  const KeySource source = draw_key_source(self, generator);
  PhiloxState state = source.drawn;
  if (source.from_cuda_state) {
    TORCH_CHECK(!source.cuda.captured_,
                "philox_key: a CUDA generator's key can't be read during CUDA graph capture");
    state = key_of_cuda_state(source.cuda.seed_.val, source.cuda.offset_.val);
  }
  return {static_cast<int64_t>(state.key), static_cast<int64_t>(state.offset)};
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CUDA, m) {
  m.impl("uniform_", &uniform_cuda);
  m.impl("normal_", &normal_cuda);
  m.impl("trunc_normal_", &trunc_normal_cuda);
  m.impl("fill_many_", &fill_many_cuda);
  m.impl("philox_key", &philox_key_cuda);
}

}  // namespace torchinit::cuda
