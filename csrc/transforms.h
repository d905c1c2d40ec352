// Random bits -> distributions, shared by the CPU and CUDA kernels.
//
// Only IEEE basic operations (+ - * / sqrt, conversions) are used, and kernels are compiled
// without FMA contraction, so a value is bit-identical on every CPU and GPU. That is why log and
// sin/cos are our own short polynomials here rather than libm's or the device's intrinsics.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/bit_cast.h>
#include <cmath>
#include <cstdint>

#include "philox.h"

namespace torchinit {

// ---- bits -> unit interval -------------------------------------------------------------------

// [0, 1) on a grid of 2^-24.
C10_HOST_DEVICE inline float unit_f32(uint32_t x) {
  return static_cast<float>(x >> 8) * 0x1p-24f;
}

// The 53-bit integer ((hi:lo) >> 11) as a double, from two exact 32-bit conversions (which
// vectorize without AVX-512DQ).
C10_HOST_DEVICE inline double top53_f64(uint32_t lo, uint32_t hi) {
  return static_cast<double>(hi) * 0x1p21 + static_cast<double>(lo >> 11);
}

// [0, 1) on a grid of 2^-53.
C10_HOST_DEVICE inline double unit_f64(uint32_t lo, uint32_t hi) {
  return top53_f64(lo, hi) * 0x1p-53;
}

// (0, 1], never 0 so log is finite. All 32 bits are used, so the smallest value is 2^-33 and
// Box-Muller's tail reaches sqrt(66 ln 2) = 6.8 sigma (mass beyond that: 1e-11).
C10_HOST_DEVICE inline float open_unit_f32(uint32_t x) {
  return static_cast<float>(x >> 8) * 0x1p-24f +
         (static_cast<float>(x & 0xFFu) + 0.5f) * 0x1p-32f;
}

// (0, 1], smallest value 2^-65: the double tail reaches 9.5 sigma.
C10_HOST_DEVICE inline double open_unit_f64(uint32_t lo, uint32_t hi) {
  return top53_f64(lo, hi) * 0x1p-53 + (static_cast<double>(lo & 0x7FFu) + 0.5) * 0x1p-64;
}

// ---- elementary functions from basic operations -----------------------------------------------

// Natural log of m 2^e for m in [1, 2): m is moved into [sqrt(1/2), sqrt(2)), then
// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, as an odd series in s.
C10_HOST_DEVICE inline float log_f32_parts(int32_t e, float m) {
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float series =
      1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
  const float fe = static_cast<float>(e);
  return fe * 0.693145752f + (2.0f * s * series + fe * 1.42860677e-06f);
}

// Natural log for positive normal x.
C10_HOST_DEVICE inline float log_f32(float x) {
  const uint32_t bits = c10::bit_cast<uint32_t>(x);
  return log_f32_parts(static_cast<int32_t>(bits >> 23) - 127,
                       c10::bit_cast<float>((bits & 0x7FFFFFu) | 0x3F800000u));
}

// Log of a positive normal double to float precision. The exponent comes exactly from x, so
// probabilities far below float's range (1e-300) keep their precision.
C10_HOST_DEVICE inline float log_f32_of_f64(double x) {
  const uint64_t bits = c10::bit_cast<uint64_t>(x);
  const double m = c10::bit_cast<double>((bits & 0xFFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  return log_f32_parts(static_cast<int32_t>(bits >> 52) - 1023, static_cast<float>(m));
}

// The exponent is an int32: int64 -> double conversion has no SIMD form without AVX-512DQ.
C10_HOST_DEVICE inline double log_f64(double x) {
  const uint64_t bits = c10::bit_cast<uint64_t>(x);
  int32_t e = static_cast<int32_t>(bits >> 52) - 1023;
  double m = c10::bit_cast<double>((bits & 0xFFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  const bool big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  e = big ? e + 1 : e;
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double series = 1.0 / 23;
  TORCHINIT_UNROLL
  for (int k = 10; k >= 0; --k) {
    series = series * s2 + 1.0 / (2 * k + 1);
  }
  const double fe = static_cast<double>(e);
  return fe * 6.93147180369123816490e-01 + (2.0 * s * series + fe * 1.90821492927058770002e-10);
}

// cos and sin of 2 pi t for t in [0, 1). The quadrant q comes exactly from t, the remainder is a
// Taylor polynomial on [-pi/4, pi/4] (truncation error below half an ulp), and the result is the
// remainder's (cos, sin) rotated by q quarter turns.
template <typename T>
struct SinCos {
  T cos;
  T sin;
};

template <typename T>
C10_HOST_DEVICE inline SinCos<T> rotate_quadrant(int32_t q, T c, T s) {
  const bool swap = q & 1;
  const T cq = swap ? s : c;
  const T sq = swap ? c : s;
  const T cos_sign = ((q + 1) & 2) ? T(-1) : T(1);  // q = 1, 2
  const T sin_sign = (q & 2) ? T(-1) : T(1);        // q = 2, 3
  return {cos_sign * cq, sin_sign * sq};
}

C10_HOST_DEVICE inline SinCos<float> sincos_2pi_f32(float t) {
  const float v = t * 4.0f;
  const int32_t q = static_cast<int32_t>(v + 0.5f);
  const float x = (v - static_cast<float>(q)) * 1.57079637f;
  const float x2 = x * x;
  const float s =
      x + x * x2 * (-1.0f / 6 + x2 * (1.0f / 120 + x2 * (-1.0f / 5040 + x2 * (1.0f / 362880))));
  const float c =
      1.0f + x2 * (-0.5f + x2 * (1.0f / 24 + x2 * (-1.0f / 720 +
                                 x2 * (1.0f / 40320 + x2 * (-1.0f / 3628800)))));
  return rotate_quadrant(q, c, s);
}

C10_HOST_DEVICE inline SinCos<double> sincos_2pi_f64(double t) {
  const double v = t * 4.0;
  const int32_t q = static_cast<int32_t>(v + 0.5);
  const double x = (v - static_cast<double>(q)) * 1.5707963267948966;
  const double x2 = x * x;
  // Horner from the x^17 (sin) and x^18 (cos) terms down; each step multiplies by -x^2/(n(n-1)).
  double s = 1.0;
  double c = 1.0;
  for (int n = 17; n >= 3; n -= 2) {
    s = 1.0 - s * x2 / static_cast<double>(n * (n - 1));
    c = 1.0 - c * x2 / static_cast<double>((n + 1) * n);
  }
  s = s * x;
  c = 1.0 - c * x2 * 0.5;
  return rotate_quadrant(q, c, s);
}

// ---- Box-Muller --------------------------------------------------------------------------------

// Two independent standard normals from two independent words (float) or word pairs (double).
C10_HOST_DEVICE inline SinCos<float> box_muller_f32(uint32_t radius_bits, uint32_t angle_bits) {
  const float r = sqrtf(-2.0f * log_f32(open_unit_f32(radius_bits)));
  const SinCos<float> cs = sincos_2pi_f32(unit_f32(angle_bits));
  return {r * cs.cos, r * cs.sin};
}

C10_HOST_DEVICE inline SinCos<double> box_muller_f64(PhiloxBlock b) {
  const double r = sqrt(-2.0 * log_f64(open_unit_f64(b.w[0], b.w[1])));
  const SinCos<double> cs = sincos_2pi_f64(unit_f64(b.w[2], b.w[3]));
  return {r * cs.cos, r * cs.sin};
}

// ---- distributions: one Philox block -> kPerBlock consecutive elements ------------------------
//
// Element i of a fill comes from block i / kPerBlock, slot i % kPerBlock. float (and the half
// types, computed in float) takes one 32-bit word per uniform; double takes two.

template <typename T>
struct Uniform;

template <>
struct Uniform<float> {
  static constexpr int kPerBlock = 4;
  float from, range;
  C10_HOST_DEVICE void operator()(PhiloxBlock b, float* out) const {
    for (int k = 0; k < 4; ++k) out[k] = unit_f32(b.w[k]) * range + from;
  }
};

template <>
struct Uniform<double> {
  static constexpr int kPerBlock = 2;
  double from, range;
  C10_HOST_DEVICE void operator()(PhiloxBlock b, double* out) const {
    out[0] = unit_f64(b.w[0], b.w[1]) * range + from;
    out[1] = unit_f64(b.w[2], b.w[3]) * range + from;
  }
};

template <typename T>
struct Normal;

template <>
struct Normal<float> {
  static constexpr int kPerBlock = 4;
  float mean, std;
  C10_HOST_DEVICE void operator()(PhiloxBlock b, float* out) const {
    const SinCos<float> z01 = box_muller_f32(b.w[0], b.w[1]);
    const SinCos<float> z23 = box_muller_f32(b.w[2], b.w[3]);
    out[0] = z01.cos * std + mean;
    out[1] = z01.sin * std + mean;
    out[2] = z23.cos * std + mean;
    out[3] = z23.sin * std + mean;
  }
};

template <>
struct Normal<double> {
  static constexpr int kPerBlock = 2;
  double mean, std;
  C10_HOST_DEVICE void operator()(PhiloxBlock b, double* out) const {
    const SinCos<double> z = box_muller_f64(b);
    out[0] = z.cos * std + mean;
    out[1] = z.sin * std + mean;
  }
};

// ---- the standard normal quantile ------------------------------------------------------------
//
// Wichura's AS 241 ("The percentage points of the normal distribution", 1988): a rational in
// (p - 1/2)^2 in the centre and in sqrt(-log p) in the tails. The probability comes in two forms,
// both exact to double precision: c = p - 1/2 and t = min(p, 1 - p); the result has c's sign.
// Float uses PPND7 (relative error about 1e-7, float's own precision), double PPND16 (1e-16).

C10_HOST_DEVICE inline float normal_quantile_f32(double c, double t) {
  // The three regions' rationals share one form, x * P3(y) / Q3(y), so one division serves all.
  const float r = sqrtf(-log_f32_of_f64(t));
  const bool central = t >= 0.075;
  const bool near = r <= 5.0f;
  const float cf = static_cast<float>(c);
  const float y = central ? 0.180625f - cf * cf : (near ? r - 1.6f : r - 5.0f);
  const float x = central ? cf : (c < 0 ? -1.0f : 1.0f);
  const auto pick = [&](float in_centre, float in_near, float in_far) {
    return central ? in_centre : (near ? in_near : in_far);
  };
  const float num = ((pick(5.9109374720e+01f, 1.7023821103e-01f, 1.7337203997e-02f) * y +
                      pick(1.5929113202e+02f, 1.3067284816e+00f, 4.2868294337e-01f)) * y +
                     pick(5.0434271938e+01f, 2.7568153900e+00f, 3.0812263860e+00f)) * y +
                    pick(3.3871327179e+00f, 1.4234372777e+00f, 6.6579051150e+00f);
  const float den = ((pick(6.7187563600e+01f, 0.0f, 0.0f) * y +
                      pick(7.8757757664e+01f, 1.2021132975e-01f, 1.2258202635e-02f)) * y +
                     pick(1.7895169469e+01f, 7.3700164250e-01f, 2.4197894225e-01f)) * y +
                    1.0f;
  return x * num / den;
}

C10_HOST_DEVICE inline double normal_quantile_f64(double c, double t) {
  // Highest power first; as in the float version, one division serves the three regions.
  constexpr double kCentralNum[8] = {
      2.5090809287301226727e+3, 3.3430575583588128105e+4, 6.7265770927008700853e+4,
      4.5921953931549871457e+4, 1.3731693765509461125e+4, 1.9715909503065514427e+3,
      1.3314166789178437745e+2, 3.3871328727963666080e+0};
  constexpr double kCentralDen[8] = {
      5.2264952788528545610e+3, 2.8729085735721942674e+4, 3.9307895800092710610e+4,
      2.1213794301586595867e+4, 5.3941960214247511077e+3, 6.8718700749205790830e+2,
      4.2313330701600911252e+1, 1.0};
  constexpr double kNearNum[8] = {
      7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
      1.27045825245236838258e+0, 3.64784832476320460504e+0, 5.76949722146069140550e+0,
      4.63033784615654529590e+0, 1.42343711074968357734e+0};
  constexpr double kNearDen[8] = {
      1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
      1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e+0,
      2.05319162663775882187e+0, 1.0};
  constexpr double kFarNum[8] = {
      2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
      2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e+0,
      5.46378491116411436990e+0, 6.65790464350110377720e+0};
  constexpr double kFarDen[8] = {
      2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
      7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
      5.99832206555887937690e-1, 1.0};
  const double r = sqrt(-log_f64(t));
  const bool central = t >= 0.075;
  const bool near = r <= 5.0;
  const double y = central ? 0.180625 - c * c : (near ? r - 1.6 : r - 5.0);
  const double x = central ? c : (c < 0 ? -1.0 : 1.0);
  double num = 0.0;
  double den = 0.0;
  TORCHINIT_UNROLL
  for (int i = 0; i < 8; ++i) {
    num = num * y + (central ? kCentralNum[i] : (near ? kNearNum[i] : kFarNum[i]));
    den = den * y + (central ? kCentralDen[i] : (near ? kNearDen[i] : kFarDen[i]));
  }
  return x * num / den;
}

template <typename T>
C10_HOST_DEVICE inline T normal_quantile(double c, double t);
template <>
C10_HOST_DEVICE inline float normal_quantile<float>(double c, double t) {
  return normal_quantile_f32(c, t);
}
template <>
C10_HOST_DEVICE inline double normal_quantile<double>(double c, double t) {
  return normal_quantile_f64(c, t);
}

// ---- the truncated normal ------------------------------------------------------------------------
//
// N(mean, std^2) truncated to the standardized interval [alpha, beta], clamped to [lo, hi], bounds
// that are values of the output dtype (so rounding can't leave [a, b]; see trunc_normal_plan.h).

// By inversion, z = Phi^-1(Phi(alpha) + u (Phi(beta) - Phi(alpha))) with u from 53 bits: one pass,
// no rejection. The probability is carried in two forms so that either tail keeps full relative
// precision: p = Phi(alpha) + u mass below 1/2, q = 1 - p = Phi^c(beta) + (1 - u) mass above.
// Q is the quantile's precision: float's is about 1 ulp of T, which the rounded law only shows in
// intervals a few thousand float values wide; there the plan asks for double.
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
template <typename T>
struct TruncNormalWide {
  static constexpr int kPerBlock = Normal<T>::kPerBlock;
  static constexpr uint32_t kAttempts = 8;
  Normal<T> normal;
  T accept_lo, accept_hi;  // the sampling interval, rounded inwards to T
  T lo, hi;
  TruncNormal<T, double> inverse;

  // v clamped to [lo, hi] when inside the sampling interval, else NaN. (& rather than &&: no
  // branch, so the SIMD loop stays vectorized.)
  C10_HOST_DEVICE T accept(T v) const {
    const bool inside = (v >= accept_lo) & (v <= accept_hi);
    const T clamped = v < lo ? lo : (v > hi ? hi : v);
    return inside ? clamped : T(NAN);
  }
  C10_HOST_DEVICE void operator()(PhiloxBlock b, T* out) const {
    normal(b, out);
    for (int k = 0; k < kPerBlock; ++k) out[k] = accept(out[k]);
  }
  C10_HOST_DEVICE T last_attempt(PhiloxBlock b) const { return inverse.sample(b.w[0], b.w[1]); }

  // The value of element i whose first proposal was rejected, one element at a time (the GPU's
  // way; cpu::resample_rejected computes the same values in SIMD batches).
  C10_HOST_DEVICE T redraw(PhiloxKey key, uint64_t i) const {
    for (uint32_t attempt = 1; attempt < kAttempts; ++attempt) {
      T proposals[kPerBlock];
      (*this)(philox4x32_10(stream_block(attempt, i), key), proposals);
      for (int k = 0; k < kPerBlock; ++k) {
        if (proposals[k] == proposals[k]) return proposals[k];
      }
    }
    return last_attempt(philox4x32_10(stream_block(kAttempts, i), key));
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
  bool uniform;   // the proposal: uniform (flat) or exponential (far tail)
  double alpha;   // the near bound in standard units
  double width;   // the interval's width in standard units
  double trunc;   // exponential: 1 - exp(-alpha width), the proposal's mass inside the interval
  double near;    // the near bound in the tensor's units
  double span;    // uniform: the interval's width in the tensor's units (width std)
  double std, sign;
  T lo, hi;

  C10_HOST_DEVICE T sample(PhiloxKey key, uint64_t index) const {
    double offset = 0.0;  // e std
    for (uint32_t attempt = 1; attempt <= kMaxAttempts; ++attempt) {
      const PhiloxBlock b = philox4x32_10(stream_block(attempt, index), key);
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
