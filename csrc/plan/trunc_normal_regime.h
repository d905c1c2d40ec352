// Host-side set-up of trunc_normal_, shared by every backend: argument checks, the sampling
// interval that keeps rounded values inside [a, b], and the choice of sampler. The kernels then
// only evaluate the samplers of samplers/trunc_normal.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/bit_cast.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "checks.h"

namespace torchinit {

// Where the interval's nearest point to 0 lies beyond this many sigma, Phi is too close to
// double's underflow for inversion, and the far-tail rejection sampler takes over.
constexpr double kFarTailSigma = 30.0;

// Intervals narrower than this, relative to their distance from the mean (their bounds, when
// the mean is 0), hold fewer than ~10^5 float values or lie where float's quantile (error ~1e-7
// relative) would skew their rounded law, so double is used.
constexpr double kNarrowInterval = 1e-2;

// Where the normal puts at least this much mass inside the interval, rejection from the normal
// (normal_'s own SIMD pass, then SIMD redraws of the rejected) beats float inversion (the
// break-even: benchmarks/README.md, "Tuning constants"). Not for float64: its Box-Muller costs as
// much as its PPND16 inversion.
constexpr double kWideMass = 0.8;

// Where the density varies across the interval by a factor below exp(2^-20), inversion has no
// precision left (Phi barely moves across it) and uniform proposals are all but always accepted.
constexpr double kFlatDensity = 0x1p-20;

// The regime chosen for one call (its sampler, `method`) and the parameters the sampler takes.
struct TruncNormalRegime {
  enum class Method { kConstant, kInverse, kWide, kFarTail, kFlat };
  Method method;
  // Output-dtype values nearest inside [a, b]: every result is clamped to [lo, hi].
  double lo, hi;
  // kInverse, kWide: Phi(alpha), Phi^c(beta), Phi(beta) - Phi(alpha) of the standardized
  // interval.
  double lower_cdf, upper_sf, mass;
  bool double_quantile;  // kInverse: the interval is too narrow for float's quantile
  // kWide: the sampling interval rounded inwards to float, where proposals are accepted.
  double accept_lo, accept_hi;
  // kFarTail, kFlat (TruncNormalRejection): the near bound in standard units and in the
  // tensor's, the interval's width in both, the exponential proposal's mass inside it, and -1
  // when the interval lies below the mean and is mirrored.
  double near_alpha, near, width, span, trunc, sign;
};

namespace trunc_normal_detail {

// Steps through the values of float16, bfloat16 or float32 by their sign-magnitude bits.
template <typename T>
struct Grid {
  using Bits = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
  static constexpr Bits kSign = Bits(1) << (8 * sizeof(T) - 1);

  static Bits bits(T x) {
    if constexpr (std::is_same_v<T, float>)
      return c10::bit_cast<uint32_t>(x);
    else
      return x.x;
  }
  static T from_bits(Bits b) {
    if constexpr (std::is_same_v<T, float>)
      return c10::bit_cast<float>(b);
    else
      return T(b, T::from_bits());
  }
  static T next_up(T x) {
    if (static_cast<float>(x) == 0.0f) return from_bits(1);
    const Bits b = bits(x);
    return from_bits(b & kSign ? b - 1 : b + 1);
  }
  static T next_down(T x) { return -next_up(-x); }

  // The smallest value >= x (x not NaN; -inf and +inf included).
  static T ceil(double x) {
    T v = static_cast<T>(static_cast<float>(x));
    while (static_cast<double>(v) < x) v = next_up(v);
    while (static_cast<double>(next_down(v)) >= x) v = next_down(v);
    return v;
  }
  static T floor(double x) { return -ceil(-x); }
};

// The interval [lo, hi] of the dtype's values inside [a, b], and the continuous interval of
// values that round (to nearest) into it: sampling there and rounding equals sampling the exact
// truncated normal and rounding, conditioned on the rounded value lying in [a, b]. So values
// never leave [a, b] and the bounds get no extra mass.
struct Cells {
  double lo, hi;                // representable bounds
  double sample_lo, sample_hi;  // continuous sampling interval
  double accept_lo, accept_hi;  // the sampling interval rounded inwards to float (kWide)
};

template <typename T>
Cells cells(double a, double b) {
  if constexpr (std::is_same_v<T, double>) {
    return {a, b, a, b, a, b};
  } else {
    using G = Grid<T>;
    const T lo = G::ceil(a);
    const T hi = G::floor(b);
    const double l = static_cast<double>(lo);
    const double h = static_cast<double>(hi);
    // Midpoints to the neighbouring values; none beyond an infinite bound or the finite range.
    const double below = static_cast<double>(G::next_down(lo));
    const double above = static_cast<double>(G::next_up(hi));
    const double sample_lo = std::isfinite(l) && std::isfinite(below) ? 0.5 * (below + l) : a;
    const double sample_hi = std::isfinite(h) && std::isfinite(above) ? 0.5 * (h + above) : b;
    const double s_lo = std::max(a, sample_lo);
    const double s_hi = std::min(b, sample_hi);
    return {l, h, s_lo, s_hi, Grid<float>::ceil(s_lo), Grid<float>::floor(s_hi)};
  }
}

inline Cells cells_for(c10::ScalarType dtype, double a, double b) {
  switch (dtype) {
    case c10::kHalf:
      return cells<c10::Half>(a, b);
    case c10::kBFloat16:
      return cells<c10::BFloat16>(a, b);
    case c10::kFloat:
      return cells<float>(a, b);
    default:
      return cells<double>(a, b);
  }
}

// Phi(x), accurate in the lower tail.
inline double ndtr(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0));
}

}  // namespace trunc_normal_detail

inline void check_trunc_normal_args(const at::Tensor& self, double mean, double std, double a,
                                    double b) {
  check_random_target(self, "trunc_normal_");
  TORCH_CHECK_VALUE(std::isfinite(mean), "trunc_normal_: mean must be finite, got mean=", mean);
  TORCH_CHECK_VALUE(std > 0.0 && std::isfinite(std),
                    "trunc_normal_: std must be positive and finite, got std=", std);
  TORCH_CHECK_VALUE(a <= b, "trunc_normal_: expects a <= b, but got a=", a, ", b=", b);
  TORCH_CHECK_VALUE(
      a < std::numeric_limits<double>::infinity() && b > -std::numeric_limits<double>::infinity(),
      "trunc_normal_: [a, b] = [", a, ", ", b, "] holds no finite value");
}

// Checks the arguments and chooses the sampler; throws, naming a and b, when no value of the
// tensor's dtype lies in [a, b].
inline TruncNormalRegime choose_trunc_normal_regime(const at::Tensor& self, double mean, double std,
                                                    double a, double b) {
  using namespace trunc_normal_detail;
  check_trunc_normal_args(self, mean, std, a, b);
  const Cells c = cells_for(self.scalar_type(), a, b);
  TORCH_CHECK_VALUE(c.lo <= c.hi, "trunc_normal_: no ", self.scalar_type(),
                    " value lies in [a, b] = [", a, ", ", b, "]");
  TruncNormalRegime regime{};
  regime.lo = c.lo;
  regime.hi = c.hi;
  if (c.lo == c.hi) {
    regime.method = TruncNormalRegime::Method::kConstant;
    return regime;
  }
  const double alpha = (c.sample_lo - mean) / std;
  const double beta = (c.sample_hi - mean) / std;
  // From the bounds, not alpha and beta, which are equal when the mean is far from a narrow
  // interval.
  const double span = c.sample_hi - c.sample_lo;
  const double width = span / std;
  const bool mirrored = beta <= 0.0;
  // The near bound in standard units: its distance from the mean, negative when inside.
  const double near_alpha = mirrored ? (mean - c.sample_hi) / std : alpha;
  if (alpha >= kFarTailSigma || beta <= -kFarTailSigma ||
      width * (std::max(near_alpha, 0.0) + 0.5 * width) <= kFlatDensity) {
    const bool far = std::max(alpha, -beta) >= kFarTailSigma;
    regime.method = far ? TruncNormalRegime::Method::kFarTail : TruncNormalRegime::Method::kFlat;
    regime.near_alpha = near_alpha;
    regime.near = mirrored ? c.sample_hi : c.sample_lo;
    regime.width = width;
    regime.span = span;
    regime.trunc = far ? -std::expm1(-near_alpha * width) : 0.0;
    regime.sign = mirrored ? -1.0 : 1.0;
    return regime;
  }
  // Float's quantile and arithmetic need the mean and std within float's range, and an
  // interval wide enough for float's precision at its distance from the mean.
  const double float_max = std::numeric_limits<float>::max();
  const bool float_range = std::abs(mean) <= float_max && std <= float_max;
  regime.double_quantile =
      !float_range ||
      c.hi - c.lo < kNarrowInterval * std::max(std::abs(c.lo - mean), std::abs(c.hi - mean));
  regime.lower_cdf = ndtr(alpha);
  regime.upper_sf = ndtr(-beta);
  // Phi(beta) - Phi(alpha) from the side where both terms are small, so nothing cancels.
  const double mass = beta <= 0.0    ? ndtr(beta) - regime.lower_cdf
                      : alpha >= 0.0 ? ndtr(-alpha) - regime.upper_sf
                                     : 1.0 - regime.lower_cdf - regime.upper_sf;
  regime.mass = std::max(mass, 0.0);
  regime.method = regime.mass >= kWideMass && self.scalar_type() != c10::kDouble && float_range
                      ? TruncNormalRegime::Method::kWide
                      : TruncNormalRegime::Method::kInverse;
  regime.accept_lo = c.accept_lo;
  regime.accept_hi = c.accept_hi;
  return regime;
}

}  // namespace torchinit
