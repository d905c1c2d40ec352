// CUDA kernel of sparse_ (docs/rng-contract.md, "sparse_ numbering"), with no host sync:
// Floyd's picks, one thread per column, into 64-column row masks (atomicOr: 64 columns share a
// word); each (row, group)'s nonzero count; their scan, giving every nonzero its rank in
// row-major order; then one thread per element writes 0 or its normal.
#include <ATen/Dispatch_v2.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../plan/checks.h"
#include "launch.cuh"
#include "sparse_columns.h"
#include "state_source.cuh"

namespace torchinit::cuda {
namespace {

using Mask = unsigned long long;  // atomicOr's 64-bit type
static_assert(sizeof(Mask) == sizeof(uint64_t));

__global__ void choose_kernel(SparseColumns p, StateSource source, Mask* masks) {
  const PhiloxState state = resolve(source);
  for_each_thread_index(p.cols, [&](int64_t c) {
    Mask* const row_masks = masks + (c / 64) * p.rows;
    const Mask flag = Mask{1} << (c % 64);
    p.choose(state, c, [&](uint64_t r) { return (atomicOr(&row_masks[r], flag) & flag) != 0; });
  });
}

__global__ void count_kernel(SparseColumns p, const uint64_t* masks, int64_t* counts) {
  const int64_t groups = p.groups();
  for_each_thread_index(p.rows * groups, [&](int64_t k) {
    counts[k] = popcount64(p.nonzeros(masks, k % groups, k / groups));
  });
}

template <typename scalar_t>
__global__ void write_kernel(SparseColumns p, StateSource source, const uint64_t* masks,
                             const int64_t* ends, Normal<at::opmath_type<scalar_t>> normal,
                             scalar_t* data, int64_t row_stride, int64_t col_stride) {
  const PhiloxState state = resolve(source);
  for_each_thread_index(p.rows * p.cols, [&](int64_t e) {
    const int64_t r = e / p.cols;
    const int64_t c = e % p.cols;
    data[r * row_stride + c * col_stride] =
        static_cast<scalar_t>(p.value(masks, ends, normal, state, r, c));
  });
}

void sparse_cuda(at::Tensor& self, double sparsity, double std,
                 std::optional<at::Generator> generator) {
  check_sparse_args(self, sparsity, std);
  if (self.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(self.device());
  const int64_t rows = self.size(0);
  const FloydChoice choice = floyd_choice(rows, sparsity);
  const SparseColumns p{rows, self.size(1), choice.count, choice.chosen_are_zeros};
  const StateSource source = draw_state_source(self, generator);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto long_options = self.options().dtype(at::kLong);
  at::Tensor masks = at::zeros({p.groups(), rows}, long_options);
  auto* const mask_data = reinterpret_cast<uint64_t*>(masks.data_ptr<int64_t>());
  // One thread block per 64-column group: the columns spread over many SMs (their Floyd loops are
  // long and latency-bound), and a thread block's atomics share one group's masks.
  choose_kernel<<<static_cast<unsigned>(p.groups()), 64, 0, stream>>>(
      p, source, reinterpret_cast<Mask*>(mask_data));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor counts = at::empty({rows * p.groups()}, long_options);
  count_kernel<<<grid_for_threads(count_kernel, counts.numel()), kThreads, 0, stream>>>(
      p, mask_data, counts.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor ends = at::cumsum(counts, 0);
  TORCHINIT_DISPATCH_FLOAT_TYPES(self.scalar_type(), "sparse_", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    write_kernel<scalar_t>
        <<<grid_for_threads(write_kernel<scalar_t>, self.numel()), kThreads, 0, stream>>>(
            p, source, mask_data, ends.data_ptr<int64_t>(),
            Normal<acc_t>{acc_t(0), static_cast<acc_t>(std)}, self.data_ptr<scalar_t>(),
            self.stride(0), self.stride(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CUDA, m) {
  m.impl("sparse_", &sparse_cuda);
}

}  // namespace torchinit::cuda
