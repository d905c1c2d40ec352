// CUDA kernels of the deterministic fills: eye_ and dirac_ in one launch each (every element is
// 0 or 1 by IdentityLayout::is_one), constant_ as ATen's own fill.
#include <ATen/Dispatch_v2.h>
#include <ATen/ops/fill.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../plan/identity_layout.h"
#include "launch.cuh"
#include "strided_layout.h"

namespace torchinit::cuda {
namespace {

template <typename scalar_t>
__global__ void identity_kernel(IdentityLayout ones, StridedLayout layout, int64_t numel,
                                scalar_t* data) {
  for_each_thread_index(numel, [&](int64_t i) {
    data[layout.offset(i)] = ones.is_one(i) ? scalar_t(1) : scalar_t(0);
  });
}

void fill_identity(at::Tensor& self, const IdentityLayout& ones) {
  if (self.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(self.device());
  const StridedLayout layout = strided_layout(self).value();  // eye_ and dirac_: at most 5 dims
  AT_DISPATCH_V2(self.scalar_type(), "fill_identity", AT_WRAP([&] {
                   const auto kernel = identity_kernel<scalar_t>;
                   kernel<<<grid_for_threads(kernel, self.numel()), kThreads, 0,
                            c10::cuda::getCurrentCUDAStream()>>>(ones, layout, self.numel(),
                                                                 self.data_ptr<scalar_t>());
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
