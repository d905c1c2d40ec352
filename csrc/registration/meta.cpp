// Meta kernels: meta tensors have no storage, so a fill only checks its arguments. They also
// serve as the fake (shape) implementations for torch.compile and opcheck.
#include <torch/library.h>

#include "../plan/checks.h"
#include "../plan/elementwise_fill.h"
#include "../plan/fill_many.h"
#include "../plan/trunc_normal_regime.h"

namespace torchinit {
namespace {

void uniform_meta(at::Tensor& self, double a, double b, std::optional<at::Generator>) {
  check_uniform_args(self, a, b);
}

void normal_meta(at::Tensor& self, double, double std, std::optional<at::Generator>) {
  check_normal_args(self, std);
}

void trunc_normal_meta(at::Tensor& self, double mean, double std, double a, double b,
                       std::optional<at::Generator>) {
  choose_trunc_normal_regime(self, mean, std, a, b);
}

void sparse_meta(at::Tensor& self, double sparsity, double std, std::optional<at::Generator>) {
  check_sparse_args(self, sparsity, std);
}

void constant_meta(at::Tensor& self, const at::Scalar&) {}

void eye_meta(at::Tensor& self) {
  check_eye_args(self);
}

void dirac_meta(at::Tensor& self, int64_t groups) {
  check_dirac_args(self, groups);
}

void orthogonal_meta(at::Tensor& self, double gain, std::optional<at::Generator>) {
  check_orthogonal_args(self, gain, /*batched=*/false);
}

void orthogonal_batch_meta(at::Tensor& self, double gain, std::optional<at::Generator>) {
  check_orthogonal_args(self, gain, /*batched=*/true);
}

void fill_many_meta(at::TensorList selves, const std::vector<std::string>& laws,
                    c10::ArrayRef<double> params, c10::IntArrayRef states,
                    c10::IntArrayRef full_sizes, c10::IntArrayRef shard_starts) {
  fill_many_targets(selves, laws, params, states, full_sizes, shard_starts);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, Meta, m) {
  m.impl("uniform_", &uniform_meta);
  m.impl("normal_", &normal_meta);
  m.impl("trunc_normal_", &trunc_normal_meta);
  m.impl("sparse_", &sparse_meta);
  m.impl("constant_", &constant_meta);
  m.impl("eye_", &eye_meta);
  m.impl("dirac_", &dirac_meta);
  m.impl("orthogonal_", &orthogonal_meta);
  m.impl("orthogonal_batch_", &orthogonal_batch_meta);
  m.impl("fill_many_", &fill_many_meta);
}

}  // namespace torchinit
