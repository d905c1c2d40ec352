// CUDA kernels of the deterministic fills: eye_ and dirac_ as zeros and then one thread per one,
// constant_ as ATen's own fill.
#include <ATen/Dispatch_v2.h>
#include <ATen/ops/fill.h>
#include <ATen/ops/zero.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "../plan/identity_layout.h"
#include "launch.cuh"

namespace torchinit::cuda {
namespace {

template <typename scalar_t>
__global__ void identity_ones_kernel(OnePlaces ones, int64_t num_ones, scalar_t* data) {
  for_each_thread_index(num_ones, [&](int64_t k) { data[ones(k)] = scalar_t(1); });
}

// The elements of a dense tensor are the bytes from its data pointer on, and zero bits are zero
// in every fill dtype: one memset. Any other view zeroes only its own elements, by ATen's fill.
void zero(at::Tensor& self, cudaStream_t stream) {
  if (self.is_non_overlapping_and_dense()) {
    C10_CUDA_CHECK(cudaMemsetAsync(self.data_ptr(), 0, self.nbytes(), stream));
    return;
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  at::zero_(self);
}

// The zeros, then the ones over them, in order on the current stream.
void fill_identity(at::Tensor& self, const IdentityLayout& layout) {
  if (self.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(self.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  zero(self, stream);
  const OnePlaces ones = layout.in_memory(self);
  AT_DISPATCH_V2(self.scalar_type(), "fill_identity", AT_WRAP([&] {
                   const auto kernel = identity_ones_kernel<scalar_t>;
                   kernel<<<grid_for_threads(kernel, layout.num_ones), kThreads, 0, stream>>>(
                       ones, layout.num_ones, self.data_ptr<scalar_t>());
                   C10_CUDA_KERNEL_LAUNCH_CHECK();
                 }),
                 TORCHINIT_FILL_DTYPES);
}

void eye_cuda(at::Tensor& self) {
  fill_identity(self, IdentityLayout::eye(self));
}

void dirac_cuda(at::Tensor& self, int64_t groups) {
  fill_identity(self, IdentityLayout::dirac(self, groups));
}

// ATen's fill is already one bandwidth-bound launch, and checks that the value fits the dtype.
void constant_cuda(at::Tensor& self, const at::Scalar& value) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  at::fill_(self, value);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CUDA, m) {
  m.impl("eye_", &eye_cuda);
  m.impl("dirac_", &dirac_cuda);
  m.impl("constant_", &constant_cuda);
}

}  // namespace torchinit::cuda
