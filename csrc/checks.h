// Argument checks shared by every backend (CPU, CUDA, Meta): each names the bad argument and runs
// before any element is written.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

namespace torchinit {

inline bool is_supported_float(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kDouble || t == c10::kHalf || t == c10::kBFloat16;
}

inline void check_no_overlap(const at::Tensor& self, const char* op) {
  TORCH_CHECK_VALUE(at::has_internal_overlap(self) != at::MemOverlap::Yes, op,
                    ": tensor has elements that share memory (e.g. made by expand()); "
                    "clone() it first");
}

// Random fills: a float16/bfloat16/float32/float64 tensor whose elements don't alias each other.
inline void check_random_target(const at::Tensor& self, const char* op) {
  TORCH_CHECK_TYPE(is_supported_float(self.scalar_type()), op,
                   ": tensor must be float16, bfloat16, float32 or float64 for a random fill, got ",
                   self.scalar_type());
  check_no_overlap(self, op);
}

inline double dtype_max(c10::ScalarType t) {
  switch (t) {
    case c10::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::max());
    case c10::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
    case c10::kFloat: return static_cast<double>(std::numeric_limits<float>::max());
    default: return std::numeric_limits<double>::max();
  }
}

inline void check_uniform_args(const at::Tensor& self, double a, double b) {
  check_random_target(self, "uniform_");
  const double limit = dtype_max(self.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(a) && std::abs(a) <= limit, "uniform_: a=", a,
                    " is not a finite ", self.scalar_type(), " value");
  TORCH_CHECK_VALUE(std::isfinite(b) && std::abs(b) <= limit, "uniform_: b=", b,
                    " is not a finite ", self.scalar_type(), " value");
  TORCH_CHECK_VALUE(a <= b, "uniform_: expects a <= b, but got a=", a, " > b=", b);
  // The width b - a is computed in float for the float types.
  TORCH_CHECK_VALUE(self.scalar_type() == c10::kDouble ||
                        std::isfinite(static_cast<float>(b) - static_cast<float>(a)),
                    "uniform_: b - a = ", b - a, " overflows float");
}

inline void check_normal_args(const at::Tensor& self, double std) {
  check_random_target(self, "normal_");
  TORCH_CHECK_VALUE(std >= 0.0, "normal_: std must be non-negative, got std=", std);
}

inline void check_sparse_args(const at::Tensor& self, double sparsity, double std) {
  TORCH_CHECK_VALUE(self.dim() == 2, "Only tensors with 2 dimensions are supported");
  check_random_target(self, "sparse_");
  TORCH_CHECK_VALUE(sparsity >= 0.0 && sparsity <= 1.0,
                    "sparse_: sparsity must be in [0, 1], got sparsity=", sparsity);
  TORCH_CHECK_VALUE(std >= 0.0, "sparse_: std must be non-negative, got std=", std);
}

inline void check_eye_args(const at::Tensor& self) {
  TORCH_CHECK_VALUE(self.dim() == 2, "Only tensors with 2 dimensions are supported");
  check_no_overlap(self, "eye_");
}

inline void check_dirac_args(const at::Tensor& self, int64_t groups) {
  TORCH_CHECK_VALUE(self.dim() >= 3 && self.dim() <= 5,
                    "Only tensors with 3, 4, or 5 dimensions are supported");
  TORCH_CHECK_VALUE(groups > 0, "dirac_: groups must be positive, got groups=", groups);
  TORCH_CHECK_VALUE(self.size(0) % groups == 0, "dim 0 must be divisible by groups");
  check_no_overlap(self, "dirac_");
}

// orthogonal_ fills each (rows, rest) matrix of self; orthogonal_batch_ (batched) takes dim 0 as
// the batch of such matrices.
inline void check_orthogonal_args(const at::Tensor& self, double gain, bool batched) {
  const char* op = batched ? "orthogonal_batch_" : "orthogonal_";
  const int64_t min_dim = batched ? 3 : 2;
  TORCH_CHECK_VALUE(self.dim() >= min_dim, op, ": Only tensors with ", min_dim,
                    " or more dimensions are supported, got a tensor of shape ", self.sizes());
  check_random_target(self, op);
  TORCH_CHECK_VALUE(std::isfinite(gain), op, ": gain must be finite, got gain=", gain);
}

}  // namespace torchinit
