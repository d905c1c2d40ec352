// Launch shapes shared by the CUDA kernels.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "threads.h"

namespace torchinit::cuda {

// A grid for `thread_blocks` thread blocks of kThreads of work: at most as many as the current
// GPU holds at once, by the occupancy of `kernel` (its registers, stack and shared memory), so the
// grid runs as one wave and grid-stride loops take the rest; at least one.
template <typename Kernel>
unsigned grid_for(Kernel kernel, int64_t thread_blocks) {
  int sms = 0, per_sm = 0;
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(thread_blocks, int64_t{per_sm} * sms)));
}

// grid_for one thread per unit of `threads` units of work.
template <typename Kernel>
unsigned grid_for_threads(Kernel kernel, int64_t threads) {
  return grid_for(kernel, (threads + kThreads - 1) / kThreads);
}

// Calls f(i) for every i in [0, n), spread over all threads of the grid.
template <typename F>
__device__ void for_each_thread_index(int64_t n, const F& f) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    f(i);
  }
}

// Calls f(b) for every b in [0, n) on each thread of one thread block: the thread blocks of the
// grid take b = blockIdx.x, blockIdx.x + gridDim.x, ...
template <typename F>
__device__ void for_each_block_index(int64_t n, const F& f) {
  for (int64_t b = blockIdx.x; b < n; b += gridDim.x) f(b);
}

}  // namespace torchinit::cuda
