// Elementwise fills (constant, uniform, normal, truncated normal) as plain data: which law, its
// parameters and Philox key, and which elements of a logical tensor the target holds (all of it,
// or a shard: a block of a larger tensor, such as one rank's part of it). Planned and checked on
// the host by every backend before any element is written; the per-device kernels only run the
// plan.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/SmallVector.h>
#include <c10/util/safe_numerics.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "../samplers/trunc_normal.h"
#include "trunc_normal_plan.h"
#include "../samplers/uniform_normal.h"
#include "../rng/philox.h"
#include "../unroll.h"
#include "checks.h"

namespace torchinit {

struct ElementwiseFill {
  enum class Law { kConstant, kUniform, kNormal, kTruncNormal };
  Law law;
  // kConstant: value; kUniform: [a, b); kNormal and kTruncNormal: mean, std.
  double value, a, b, mean, std;
  TruncNormalPlan trunc;
  PhiloxState state;  // set by the caller once the checks have passed
};

inline ElementwiseFill constant_fill(const at::Tensor& self, double value) {
  check_random_target(self, "constant_");
  const double limit = dtype_max(self.scalar_type());
  TORCH_CHECK_VALUE(!std::isfinite(value) || std::abs(value) <= limit, "constant_: value ", value,
                    " overflows ", self.scalar_type());
  ElementwiseFill f{};
  f.law = ElementwiseFill::Law::kConstant;
  f.value = value;
  return f;
}

inline ElementwiseFill uniform_fill(const at::Tensor& self, double a, double b) {
  check_uniform_args(self, a, b);
  ElementwiseFill f{};
  f.law = ElementwiseFill::Law::kUniform;
  f.a = a;
  f.b = b;
  return f;
}

inline ElementwiseFill normal_fill(const at::Tensor& self, double mean, double std) {
  check_normal_args(self, std);
  ElementwiseFill f{};
  f.law = ElementwiseFill::Law::kNormal;
  f.mean = mean;
  f.std = std;
  return f;
}

inline ElementwiseFill trunc_normal_fill(const at::Tensor& self, double mean, double std, double a,
                                         double b) {
  ElementwiseFill f{};
  f.law = ElementwiseFill::Law::kTruncNormal;
  f.trunc = plan_trunc_normal(self, mean, std, a, b);
  f.mean = mean;
  f.std = std;
  return f;
}

// Every element the same value: constant fills, and trunc_normal_ on a one-value interval.
template <typename T>
struct Constant {
  T value;
};

// Calls visit(dist) with the distribution of `fill` in compute type acc_t: a Constant, Uniform,
// Normal, TruncNormal (float or double quantile), TruncNormalWide or TruncNormalRejection. Each
// backend overloads on the type to evaluate it its own way; the law itself is decided here only.
// Host code visits with host lambdas: nvcc's check of host calls from host-device code is off.
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <typename acc_t, typename Visit>
C10_HOST_DEVICE void visit_law(const ElementwiseFill& fill, const Visit& visit) {
  using Law = ElementwiseFill::Law;
  using Method = TruncNormalPlan::Method;
  const auto mean = static_cast<acc_t>(fill.mean);
  const auto sigma = static_cast<acc_t>(fill.std);
  switch (fill.law) {
    case Law::kConstant:
      return visit(Constant<acc_t>{static_cast<acc_t>(fill.value)});
    case Law::kUniform: {
      const auto a = static_cast<acc_t>(fill.a);
      return visit(Uniform<acc_t>{a, static_cast<acc_t>(fill.b) - a});
    }
    case Law::kNormal:
      return visit(Normal<acc_t>{mean, sigma});
    case Law::kTruncNormal:
      break;
  }
  const TruncNormalPlan& plan = fill.trunc;
  const auto lo = static_cast<acc_t>(plan.lo);
  const auto hi = static_cast<acc_t>(plan.hi);
  switch (plan.method) {
    case Method::kConstant:
      return visit(Constant<acc_t>{lo});
    case Method::kInverse:
      if (plan.double_quantile) {
        return visit(TruncNormal<acc_t, double>{plan.lower_cdf, plan.upper_sf, plan.mass, fill.mean,
                                                fill.std, lo, hi});
      }
      return visit(
          TruncNormal<acc_t, acc_t>{plan.lower_cdf, plan.upper_sf, plan.mass, mean, sigma, lo, hi});
    case Method::kWide:
      return visit(TruncNormalWide<acc_t>{
          {mean, sigma},
          static_cast<acc_t>(plan.accept_lo),
          static_cast<acc_t>(plan.accept_hi),
          lo,
          hi,
          {plan.lower_cdf, plan.upper_sf, plan.mass, fill.mean, fill.std, lo, hi}});
    case Method::kFarTail:
    case Method::kFlat:
      return visit(TruncNormalRejection<acc_t>{plan.method == Method::kFlat, plan.near_alpha,
                                               plan.width, plan.trunc, plan.near, plan.span,
                                               fill.std, plan.sign, lo, hi});
  }
}

// The fill fill_many_ asks of a target: law by name, parameters params[0..4) in the order of
// the single op's arguments.
inline ElementwiseFill named_fill(const at::Tensor& self, c10::string_view law,
                                  c10::ArrayRef<double> params) {
  if (law == "constant") return constant_fill(self, params[0]);
  if (law == "uniform") return uniform_fill(self, params[0], params[1]);
  if (law == "normal") return normal_fill(self, params[0], params[1]);
  if (law == "trunc_normal")
    return trunc_normal_fill(self, params[0], params[1], params[2], params[3]);
  TORCH_CHECK_VALUE(false, "fill_many_: unknown law '", law,
                    "' (expected constant, uniform, normal or trunc_normal)");
}

// Element i (row-major) of a block with `ndim` dims of sizes `sizes`, as an index of the larger
// tensor it is a block of: base + the sum of i's row-major digits times `strides` (the larger
// tensor's strides). ndim 0: the block is one range of the larger tensor, base + i.
C10_HOST_DEVICE inline int64_t full_index(int64_t i, int64_t ndim, const int64_t* sizes,
                                          const int64_t* strides, int64_t base) {
  if (ndim == 0) return base + i;
  int64_t full = base;
  TORCHINIT_NO_UNROLL
  for (int64_t d = ndim - 1; d > 0; --d) {
    full += (i % sizes[d]) * strides[d];
    i /= sizes[d];
  }
  return full + i * strides[0];
}

// Maps a target's logical (row-major) element indices to those of the logical tensor whose fill
// it takes, as full_index does. The block's dimensions are merged where it spans the inner one's
// full extent (and those of size 1 dropped), so local elements stay consecutive in the full
// numbering as far as the geometry allows: a whole tensor or a block of whole rows is one range
// (no dimensions left), a block of columns is runs of its row width. Fills work run by run, and
// a run costs at least a SIMD batch of Philox blocks however short it is: runs of a conv
// kernel's width (3, or 1 for 1x1) would waste nearly all of every batch.
class ShardIndex {
 public:
  // The whole tensor: the identity.
  ShardIndex() = default;

  // self is the block of a tensor of sizes `full_sizes` that starts at `starts`. Every bound is
  // checked without overflow, and the larger tensor within the RNG contract's element count, so
  // every index the map computes lies in [0, its numel).
  ShardIndex(const at::Tensor& self, c10::IntArrayRef full_sizes, c10::IntArrayRef starts) {
    const int64_t ndim = self.dim();
    TORCH_CHECK_VALUE(static_cast<int64_t>(full_sizes.size()) == ndim &&
                          static_cast<int64_t>(starts.size()) == ndim,
                      "fill_many_: a tensor of shape ", self.sizes(),
                      " needs full sizes and block starts of length ", ndim, ", got ", full_sizes,
                      " and ", starts);
    c10::SmallVector<int64_t, 6> full_strides(ndim);
    int64_t full_numel = 1;
    for (int64_t d = ndim - 1; d >= 0; --d) {
      TORCH_CHECK_VALUE(
          full_sizes[d] >= 0 && starts[d] >= 0 && starts[d] <= full_sizes[d] - self.size(d),
          "fill_many_: a block of shape ", self.sizes(), " at ", starts,
          " does not fit in a tensor of shape ", full_sizes);
      full_strides[d] = full_numel;
      TORCH_CHECK_VALUE(
          !c10::mul_overflows(full_numel, full_sizes[d], &full_numel) && full_numel <= kMaxElements,
          "fill_many_: full_sizes ", full_sizes,
          " has more elements than the RNG contract numbers (2^52)");
    }
    const c10::IntArrayRef sizes = self.sizes();  // (numel() refuses fake tensors' symbolic sizes)
    if (std::find(sizes.begin(), sizes.end(), 0) != sizes.end()) return;  // no element to map
    for (int64_t d = 0; d < ndim; ++d) {
      base_ += starts[d] * full_strides[d];  // below full_numel: the block's first element
      if (sizes[d] == 1) continue;
      if (!sizes_.empty() && strides_.back() == sizes[d] * full_strides[d]) {
        sizes_.back() *= sizes[d];  // the block spans dimension d's full extent
        strides_.back() = full_strides[d];
      } else {
        sizes_.push_back(sizes[d]);
        strides_.push_back(full_strides[d]);
      }
    }
    if (sizes_.size() == 1 && strides_[0] == 1) {  // one range
      sizes_.clear();
      strides_.clear();
    }
  }

  // The merged dimensions (none: one range from base()) and their strides in the full tensor.
  c10::IntArrayRef sizes() const { return sizes_; }
  c10::IntArrayRef strides() const { return strides_; }
  int64_t base() const { return base_; }

  // Calls run(dst_offset, full_begin, full_end) for the runs that cover local [begin, end).
  template <typename Run>
  void for_each_run(int64_t begin, int64_t end, const Run& run) const {
    const int64_t ndim = static_cast<int64_t>(sizes_.size());
    if (ndim == 0) {
      run(int64_t{0}, base_ + begin, base_ + end);
      return;
    }
    // The innermost dimension is consecutive in the full tensor unless the block's last
    // dimension was dropped (size 1 of a larger one): then elements are runs of one.
    const int64_t inner = strides_.back() == 1 ? sizes_.back() : 1;
    for (int64_t i = begin; i < end;) {
      const int64_t full = full_index(i, ndim, sizes_.data(), strides_.data(), base_);
      const int64_t stop = std::min(end, i - i % inner + inner);
      run(i - begin, full, full + (stop - i));
      i = stop;
    }
  }

 private:
  c10::SmallVector<int64_t, 6> sizes_, strides_;
  int64_t base_ = 0;
};

// One target of a multi-tensor fill.
struct FillTarget {
  at::Tensor self;
  ElementwiseFill fill;
  ShardIndex shard;
};

// The targets of fill_many_, planned and checked (including that no two of them share memory)
// before anything is written.
inline std::vector<FillTarget> plan_fill_many(at::TensorList selves,
                                              const std::vector<std::string>& laws,
                                              c10::ArrayRef<double> params, c10::IntArrayRef keys,
                                              c10::IntArrayRef full_sizes,
                                              c10::IntArrayRef starts) {
  const size_t n = selves.size();
  TORCH_CHECK_VALUE(laws.size() == n && params.size() == 4 * n && keys.size() == 2 * n,
                    "fill_many_: ", n, " tensors need ", n, " laws, ", 4 * n, " params and ", 2 * n,
                    " keys, got ", laws.size(), ", ", params.size(), " and ", keys.size());
  TORCH_CHECK_VALUE(full_sizes.size() == starts.size(),
                    "fill_many_: full_sizes and block_starts differ in length");
  const bool shards = !full_sizes.empty();
  // One device: the dispatcher runs one backend's kernel for the whole list.
  for (size_t t = 1; t < n; ++t) {
    TORCH_CHECK_VALUE(selves[t].device() == selves[0].device(), "fill_many_: selves[", t,
                      "] is on ", selves[t].device(), " but selves[0] is on ", selves[0].device(),
                      "; all tensors of one call must be on one device");
  }
  std::vector<FillTarget> targets;
  targets.reserve(n);
  size_t dims = 0;
  for (size_t t = 0; t < n; ++t) {
    const at::Tensor& self = selves[t];
    ElementwiseFill fill = named_fill(self, laws[t], params.slice(4 * t, 4));
    fill.state = {static_cast<uint64_t>(keys[2 * t]), static_cast<uint64_t>(keys[2 * t + 1])};
    ShardIndex shard;
    if (shards) {
      const auto ndim = static_cast<size_t>(self.dim());
      TORCH_CHECK_VALUE(dims + ndim <= full_sizes.size(), "fill_many_: full_sizes is too short");
      shard = ShardIndex(self, full_sizes.slice(dims, ndim), starts.slice(dims, ndim));
      dims += ndim;
    }
    targets.push_back({self, fill, std::move(shard)});
  }
  TORCH_CHECK_VALUE(dims == full_sizes.size(), "fill_many_: full_sizes is too long");
  // Tensors that share memory are next to each other in storage order.
  std::vector<std::pair<const void*, size_t>> by_storage;
  for (size_t t = 0; t < n; ++t) {
    if (!selves[t].is_meta()) by_storage.emplace_back(selves[t].storage().data(), t);
  }
  std::sort(by_storage.begin(), by_storage.end());
  for (size_t i = 0; i < by_storage.size(); ++i) {
    for (size_t j = i + 1; j < by_storage.size() && by_storage[j].first == by_storage[i].first;
         ++j) {
      const size_t t = by_storage[i].second, u = by_storage[j].second;
      TORCH_CHECK_VALUE(at::get_overlap_status(selves[t], selves[u]) == at::MemOverlapStatus::No,
                        "fill_many_: tensors ", std::min(t, u), " and ", std::max(t, u),
                        " share memory");
    }
  }
  return targets;
}

}  // namespace torchinit
