// Launch shapes shared by the CUDA kernels.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace torchinit::cuda {

constexpr int kThreads = 256;

// Thread blocks for `work` units of work: at most enough to fill the current GPU (grid-stride
// loops take the rest), at least one.
inline unsigned grid_for(int64_t work) {
  int sms = 0;
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(work, int64_t{8} * sms)));
}

// Calls f(i) for every i in [0, n), spread over all threads of the grid.
template <typename F>
__device__ void for_each_thread_index(int64_t n, const F& f) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    f(i);
  }
}

// Calls f(b) for every b in [0, n) on each thread of one thread block: the blocks of the grid
// take b = blockIdx.x, blockIdx.x + gridDim.x, ...
template <typename F>
__device__ void for_each_block_index(int64_t n, const F& f) {
  for (int64_t b = blockIdx.x; b < n; b += gridDim.x) f(b);
}

}  // namespace torchinit::cuda
