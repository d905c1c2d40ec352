// Argument checks shared by every backend (CPU, CUDA, Meta): each names the bad argument and runs
// before any element is written.
#pragma once

#include <ATen/Dispatch_v2.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <numeric>
#include <vector>

// The dtypes of the random fills, and those constant_, eye_ and dirac_ write, as AT_DISPATCH_V2
// takes them; _C.float_dtypes() and _C.fill_dtypes() give them to torchinit_ext/_dispatch.py.
#define TORCHINIT_FLOAT_DTYPES AT_EXPAND(AT_FLOATING_TYPES), at::kHalf, at::kBFloat16
#define TORCHINIT_FILL_DTYPES \
  TORCHINIT_FLOAT_DTYPES, AT_EXPAND(AT_INTEGRAL_TYPES), AT_EXPAND(AT_COMPLEX_TYPES), at::kBool

// Runs the lambda BODY with scalar_t bound to TYPE, one of TORCHINIT_FLOAT_DTYPES: the random
// fills' dispatch, so that their dtype set is the one written above.
#define TORCHINIT_DISPATCH_FLOAT_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_V2(TYPE, NAME, AT_WRAP(__VA_ARGS__), TORCHINIT_FLOAT_DTYPES)

namespace torchinit {

inline constexpr c10::ScalarType kFloatDtypes[] = {TORCHINIT_FLOAT_DTYPES};
inline constexpr c10::ScalarType kFillDtypes[] = {TORCHINIT_FILL_DTYPES};

// The most elements a random fill may number (a shard of a larger tensor counts the larger
// tensor's): the RNG contract numbers element indices and their streams' Philox blocks below
// 2^56, and sparse_ takes up to 16 Philox blocks per column. No tensor in memory comes near; meta
// tensors can.
constexpr int64_t kMaxElements = int64_t{1} << 52;

// Fake tensors with symbolic shapes (torch.compile) are checked when the real call runs.
inline bool has_symbolic_shape(const at::Tensor& self) {
  return self.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
}

inline void check_element_count(const at::Tensor& self, const char* op) {
  if (has_symbolic_shape(self)) return;
  TORCH_CHECK_VALUE(self.numel() <= kMaxElements, op, ": ", self.numel(),
                    " elements is more than the RNG contract numbers (2^52)");
}

inline bool is_supported_float(c10::ScalarType t) {
  return std::find(std::begin(kFloatDtypes), std::end(kFloatDtypes), t) != std::end(kFloatDtypes);
}

inline bool is_fill_dtype(c10::ScalarType t) {
  return std::find(std::begin(kFillDtypes), std::end(kFillDtypes), t) != std::end(kFillDtypes);
}

// Whether two elements of self lie at the same memory offset. ATen decides only dense and
// expanded layouts; for the rest, strides that each step past the whole span of the smaller
// ones can't overlap (slices, transposes), and any other layout (as_strided) is decided exactly,
// one bit per offset of its span.
inline bool elements_overlap(const at::Tensor& self) {
  const at::MemOverlap status = at::has_internal_overlap(self);
  if (status != at::MemOverlap::TooHard) return status == at::MemOverlap::Yes;
  if (has_symbolic_shape(self) || self.numel() <= 1) return false;
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dims with size > 1
  for (int64_t d = 0; d < self.dim(); ++d) {
    if (self.size(d) > 1) dims.emplace_back(self.stride(d), self.size(d));
  }
  std::sort(dims.begin(), dims.end());
  int64_t span = 0;  // largest offset reached by the dims so far
  bool nested = true;
  for (const auto& [stride, size] : dims) {
    if (stride <= span) nested = false;
    span += stride * (size - 1);  // at most the storage's (or, on meta, the sizes') extent
  }
  if (nested) return false;
  // One bit per offset: bounded by the memory the tensor spans, 1/8 of it for bytes.
  constexpr int64_t kMaxSpanBits = int64_t{1} << 34;
  if (span >= kMaxSpanBits) return true;
  std::vector<bool> seen(static_cast<size_t>(span) + 1);
  std::vector<int64_t> index(dims.size(), 0);
  for (int64_t offset = 0;;) {
    if (seen[offset]) return true;
    seen[offset] = true;
    size_t d = 0;
    for (; d < dims.size(); ++d) {
      offset += dims[d].first;
      if (++index[d] < dims[d].second) break;
      offset -= dims[d].first * index[d];
      index[d] = 0;
    }
    if (d == dims.size()) return false;
  }
}

inline void check_no_overlap(const at::Tensor& self, const char* op) {
  TORCH_CHECK_VALUE(!elements_overlap(self), op,
                    ": tensor has elements that share memory (e.g. made by expand() or "
                    "as_strided()); clone() it first");
}

// Random fills: a float16/bfloat16/float32/float64 tensor whose elements don't alias each other.
inline void check_random_target(const at::Tensor& self, const char* op) {
  TORCH_CHECK_TYPE(is_supported_float(self.scalar_type()), op,
                   ": tensor must be float16, bfloat16, float32 or float64 for a random fill, got ",
                   self.scalar_type());
  check_element_count(self, op);
  check_no_overlap(self, op);
}

inline double dtype_max(c10::ScalarType t) {
  switch (t) {
    case c10::kHalf:
      return static_cast<double>(std::numeric_limits<c10::Half>::max());
    case c10::kBFloat16:
      return static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
    case c10::kFloat:
      return static_cast<double>(std::numeric_limits<float>::max());
    default:
      return std::numeric_limits<double>::max();
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
  // The width b - a is computed in float for the float types, in double for double.
  const bool width_finite = self.scalar_type() == c10::kDouble
                                ? std::isfinite(b - a)
                                : std::isfinite(static_cast<float>(b) - static_cast<float>(a));
  TORCH_CHECK_VALUE(width_finite, "uniform_: b - a overflows ", self.scalar_type(), " (a=", a,
                    ", b=", b, ")");
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
