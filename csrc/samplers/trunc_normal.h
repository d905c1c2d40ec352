// Every truncated-normal sampler, shared by the CPU and CUDA kernels; plan/trunc_normal_regime.h
// chooses one and sets its parameters on the host.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../math/elementary.h"
#include "../rng/philox.h"
#include "../rng/streams.h"
#include "../rng/unit_interval.h"
#include "uniform_normal.h"

namespace torchinit {

// ---- the truncated normal
// ------------------------------------------------------------------------
//
// N(mean, std^2) truncated to the standardized interval [alpha, beta], clamped to [lo, hi],
// bounds that are values of the output dtype (so rounding can't leave [a, b]; see
// plan/trunc_normal_regime.h).

// By inversion, z = Phi^-1(Phi(alpha) + u (Phi(beta) - Phi(alpha))) with u from 53 bits: one pass,
// no rejection. The probability is carried in two forms so that either tail keeps full relative
// precision: p = Phi(alpha) + u mass below 1/2, q = 1 - p = Phi^c(beta) + (1 - u) mass above.
// Q is the quantile's precision: float's is about 1 ulp of T, which the rounded law only shows in
// intervals a few thousand float values wide; there the chosen regime asks for double.
template <typename T, typename Q = T>
struct TruncNormal {
  static constexpr int kPerBlock = 2;
  double lower_cdf;  // Phi(alpha)
  double upper_sf;   // Phi^c(beta) = 1 - Phi(beta)
  double mass;       // Phi(beta) - Phi(alpha)
  Q mean, std;       // in Q: mean and std may lie beyond float's range when Q is double
  T lo, hi;

  C10_HOST_DEVICE T sample(uint32_t w0, uint32_t w1) const {
    const double u = unit_f64(w0, w1);
    const double p = lower_cdf + u * mass;
    const double q = upper_sf + (1.0 - u) * mass;
    const bool below = p < 0.5;
    const Q z = normal_quantile<Q>(below ? p - 0.5 : 0.5 - q, below ? p : q);
    const T v = static_cast<T>(z * std + mean);
    return v < lo ? lo : (v > hi ? hi : v);
  }
  C10_HOST_DEVICE void operator()(PhiloxBlock b, T* out) const {
    out[0] = sample(b.w[0], b.w[1]);
    out[1] = sample(b.w[2], b.w[3]);
  }
};

// Wide intervals, where the normal itself puts mass >= kWideMass inside: rejection from the
// normal. Element i's first proposal is normal_'s value of element i (block i / kPerBlock, so the
// SIMD pass is normal_'s own); one outside the sampling interval [accept_lo, accept_hi] comes out
// NaN and is redrawn (redraw): attempt r = 1 .. kAttempts - 1 of element i takes
// the first accepted of the kPerBlock normals of block stream_block(r, i), and the last attempt
// inverts the CDF with that block's first two words (probability
// (1 - mass)^(kPerBlock (kAttempts - 1)) per redrawn element: 0.2^28 for float at mass 0.8).
// Every value is a proposal conditioned on the interval or an exact inversion: the law is exact.
// float only: float64's Box-Muller costs as much as its inversion (kWideMass), and
// choose_trunc_normal_regime never picks this regime for it.
template <typename T>
struct TruncNormalWide {
  static_assert(std::is_same_v<T, float>, "float64 never takes the wide regime");
  static constexpr int kPerBlock = Normal<T>::kPerBlock;
  static constexpr uint32_t kAttempts = 8;
  Normal<T> normal;
  T accept_lo, accept_hi;  // the sampling interval, rounded inwards to T
  T lo, hi;
  TruncNormal<T, double> inverse;

  // Whether proposal v lies inside the sampling interval. (& rather than &&: no branch, so the
  // SIMD loop stays vectorized.)
  C10_HOST_DEVICE bool inside(T v) const { return (v >= accept_lo) & (v <= accept_hi); }
  // v clamped to [lo, hi]: two selects one after the other (nested, nvcc made them branches).
  C10_HOST_DEVICE T clamp(T v) const {
    const T below_hi = v > hi ? hi : v;
    return v < lo ? lo : below_hi;
  }
  // v clamped when inside, else NaN. Both computed first: a select of the two, no branch.
  C10_HOST_DEVICE T accept(T v) const {
    const bool accepted = inside(v);
    const T clamped = clamp(v);
    return accepted ? clamped : T(NAN);
  }
  // fma: Normal<float>'s fused multiply-add, when given.
  template <typename... Fma>
  C10_HOST_DEVICE void operator()(PhiloxBlock b, T* out, Fma... fma) const {
    normal(b, out, fma...);
    for (int k = 0; k < kPerBlock; ++k) out[k] = accept(out[k]);
  }
  // A block's proposals, each clamped whether accepted or not, and which were rejected:
  // operator() without its NaN marks, for the GPU's spans, which test a span's acceptance once
  // rather than each value for NaN.
  C10_HOST_DEVICE void clamped_proposals(PhiloxBlock b, T* out, bool* rejected) const {
    normal(b, out);
    for (int k = 0; k < kPerBlock; ++k) {
      rejected[k] = !inside(out[k]);
      out[k] = clamp(out[k]);
    }
  }
  C10_HOST_DEVICE T last_attempt(PhiloxBlock b) const { return inverse.sample(b.w[0], b.w[1]); }

  // The value of element i whose first proposal was rejected, one element at a time (the GPU's
  // way; cpu::resample_rejected computes the same values in SIMD batches).
  template <typename State>
  C10_HOST_DEVICE T redraw(State state, uint64_t i) const {
    for (uint32_t attempt = 1; attempt < kAttempts; ++attempt) {
      T proposals[kPerBlock];
      (*this)(philox4x32_10(stream_block(attempt, i), state), proposals);
      for (int k = 0; k < kPerBlock; ++k) {
        if (proposals[k] == proposals[k]) return proposals[k];
      }
    }
    return last_attempt(philox4x32_10(stream_block(kAttempts, i), state));
  }
};

// Per-element rejection, for the regimes where inversion loses its precision. In standard units
// measured from the interval's near bound alpha (mirrored to alpha >= 0 when the interval lies
// below the mean: sign = -1), a proposal e in [0, width] is accepted with probability
// exp(-t(e)), the target density over the proposal's, normalized to at most 1:
// - far tails (alpha >= 30 sigma, Phi near double's underflow): e ~ Exp(rate alpha) truncated at
//   width (Robert 1995), t = e^2 / 2, accepted 99.9% of the time on average;
// - flat intervals (the density varies by less than 2^-20 across them, e.g. std far larger than
//   the interval): e ~ U(0, width), t = e (alpha + e / 2), or (alpha + e)^2 / 2 when the mean lies
//   inside (alpha < 0).
// The value is near + sign e std: measured from the bound, not the mean, so it keeps full
// precision when the mean or std is huge. Attempt r of element i uses block stream_block(r, i),
// r = 1, 2, ...; after 255 rejections (probability below 1e-700) the last proposal is kept.
template <typename T>
struct TruncNormalRejection {
  static constexpr uint32_t kMaxAttempts = 255;
  bool uniform;  // the proposal: uniform (flat) or exponential (far tail)
  double alpha;  // the near bound in standard units
  double width;  // the interval's width in standard units
  double trunc;  // exponential: 1 - exp(-alpha width), the proposal's mass inside the interval
  double near;   // the near bound in the tensor's units
  double span;   // uniform: the interval's width in the tensor's units (width std)
  double std, sign;
  T lo, hi;

  template <typename State>
  C10_HOST_DEVICE T sample(State state, uint64_t index) const {
    double offset = 0.0;  // e std
    for (uint32_t attempt = 1; attempt <= kMaxAttempts; ++attempt) {
      const PhiloxBlock b = philox4x32_10(stream_block(attempt, index), state);
      const double u = unit_f64(b.w[0], b.w[1]);
      double e, t;
      if (uniform) {
        e = u * width;
        offset = u * span;
        t = alpha >= 0.0 ? e * (alpha + 0.5 * e) : 0.5 * (alpha + e) * (alpha + e);
      } else {
        e = -log_f64(1.0 - u * trunc) / alpha;
        offset = e * std;
        t = 0.5 * e * e;
      }
      if (log_f64(open_unit_f64(b.w[2], b.w[3])) <= -t) break;
    }
    const T v = static_cast<T>(near + sign * offset);
    return v < lo ? lo : (v > hi ? hi : v);
  }
};

}  // namespace torchinit
