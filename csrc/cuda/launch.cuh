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
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                        c10::cuda::current_device()));
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(work, int64_t{8} * sms)));
}

}  // namespace torchinit::cuda
