// An elementwise fill (constant, uniform, normal, truncated normal) as plain data: which law, its
// parameters and its Philox state. Planned and checked on the host by every backend before any
// element is written; visit_law hands the per-device kernels the law's sampler, and they only
// evaluate it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <type_traits>

#include "../rng/philox.h"
#include "../samplers/trunc_normal.h"
#include "../samplers/uniform_normal.h"
#include "checks.h"
#include "trunc_normal_regime.h"

namespace torchinit {

struct ElementwiseFill {
  enum class Law { kConstant, kUniform, kNormal, kTruncNormal };
  Law law;
  // kConstant: value; kUniform: [a, b); kNormal and kTruncNormal: mean, std.
  double value, a, b, mean, std;
  TruncNormalRegime trunc;
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
  f.trunc = choose_trunc_normal_regime(self, mean, std, a, b);
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
// Normal, TruncNormal (float or double quantile), TruncNormalWide (float only) or
// TruncNormalRejection. Each backend overloads on the type to evaluate it its own way; the law
// itself is decided here only.
// Host code visits with host lambdas: nvcc's check of host calls from host-device code is off.
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <typename acc_t, typename Visit>
C10_HOST_DEVICE void visit_law(const ElementwiseFill& fill, const Visit& visit) {
  using Law = ElementwiseFill::Law;
  using Method = TruncNormalRegime::Method;
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
  const TruncNormalRegime& regime = fill.trunc;
  const auto lo = static_cast<acc_t>(regime.lo);
  const auto hi = static_cast<acc_t>(regime.hi);
  switch (regime.method) {
    case Method::kConstant:
      return visit(Constant<acc_t>{lo});
    case Method::kInverse:
      if (regime.double_quantile) {
        return visit(TruncNormal<acc_t, double>{regime.lower_cdf, regime.upper_sf, regime.mass,
                                                fill.mean, fill.std, lo, hi});
      }
      return visit(TruncNormal<acc_t, acc_t>{regime.lower_cdf, regime.upper_sf, regime.mass, mean,
                                             sigma, lo, hi});
    case Method::kWide:
      // float64 never takes the wide regime (choose_trunc_normal_regime), so no backend compiles
      // a double wide sampler.
      if constexpr (std::is_same_v<acc_t, float>) {
        return visit(TruncNormalWide<acc_t>{
            {mean, sigma},
            static_cast<acc_t>(regime.accept_lo),
            static_cast<acc_t>(regime.accept_hi),
            lo,
            hi,
            {regime.lower_cdf, regime.upper_sf, regime.mass, fill.mean, fill.std, lo, hi}});
      } else {
        TORCH_INTERNAL_ASSERT(false, "trunc_normal_: the wide regime is float-only");
        return;
      }
    case Method::kFarTail:
    case Method::kFlat:
      return visit(TruncNormalRejection<acc_t>{regime.method == Method::kFlat, regime.near_alpha,
                                               regime.width, regime.trunc, regime.near, regime.span,
                                               fill.std, regime.sign, lo, hi});
  }
}

}  // namespace torchinit
