// Threads per thread block of every CUDA launch; plain C++, so the host emulation of the kernels
// (tests/cuda_logic_host.cpp) and the shared-memory sizes of fill_spans.h use the launches' own.
#pragma once

namespace torchinit::cuda {

constexpr int kThreads = 256;

}  // namespace torchinit::cuda
