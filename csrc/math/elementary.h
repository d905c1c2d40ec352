// log, sin/cos of 2 pi t and the standard normal quantile, from IEEE basic operations only
// (+ - * / sqrt, conversions). Kernels are compiled without FMA contraction, so each value is
// bit-identical on every CPU and GPU: that is why these are our own short polynomials rather than
// libm's or the device's intrinsics.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/bit_cast.h>

#include <cmath>
#include <cstdint>

#include "../unroll.h"

namespace torchinit {

// ---- elementary functions from basic operations -----------------------------------------------

// Natural log of m 2^e for m in [1, 2): m is moved into [sqrt(1/2), sqrt(2)), then
// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, as an odd series in s.
C10_HOST_DEVICE inline float log_f32_parts(int32_t e, float m) {
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float series = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
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
                      pick(1.5929113202e+02f, 1.3067284816e+00f, 4.2868294337e-01f)) *
                         y +
                     pick(5.0434271938e+01f, 2.7568153900e+00f, 3.0812263860e+00f)) *
                        y +
                    pick(3.3871327179e+00f, 1.4234372777e+00f, 6.6579051150e+00f);
  const float den = ((pick(6.7187563600e+01f, 0.0f, 0.0f) * y +
                      pick(7.8757757664e+01f, 1.2021132975e-01f, 1.2258202635e-02f)) *
                         y +
                     pick(1.7895169469e+01f, 7.3700164250e-01f, 2.4197894225e-01f)) *
                        y +
                    1.0f;
  return x * num / den;
}

C10_HOST_DEVICE inline double normal_quantile_f64(double c, double t) {
  // Highest power first; as in the float version, one division serves the three regions.
  constexpr double kCentralNum[8] = {2.5090809287301226727e+3, 3.3430575583588128105e+4,
                                     6.7265770927008700853e+4, 4.5921953931549871457e+4,
                                     1.3731693765509461125e+4, 1.9715909503065514427e+3,
                                     1.3314166789178437745e+2, 3.3871328727963666080e+0};
  constexpr double kCentralDen[8] = {5.2264952788528545610e+3, 2.8729085735721942674e+4,
                                     3.9307895800092710610e+4, 2.1213794301586595867e+4,
                                     5.3941960214247511077e+3, 6.8718700749205790830e+2,
                                     4.2313330701600911252e+1, 1.0};
  constexpr double kNearNum[8] = {7.74545014278341407640e-4, 2.27238449892691845833e-2,
                                  2.41780725177450611770e-1, 1.27045825245236838258e+0,
                                  3.64784832476320460504e+0, 5.76949722146069140550e+0,
                                  4.63033784615654529590e+0, 1.42343711074968357734e+0};
  constexpr double kNearDen[8] = {1.05075007164441684324e-9, 5.47593808499534494600e-4,
                                  1.51986665636164571966e-2, 1.48103976427480074590e-1,
                                  6.89767334985100004550e-1, 1.67638483018380384940e+0,
                                  2.05319162663775882187e+0, 1.0};
  constexpr double kFarNum[8] = {2.01033439929228813265e-7, 2.71155556874348757815e-5,
                                 1.24266094738807843860e-3, 2.65321895265761230930e-2,
                                 2.96560571828504891230e-1, 1.78482653991729133580e+0,
                                 5.46378491116411436990e+0, 6.65790464350110377720e+0};
  constexpr double kFarDen[8] = {2.04426310338993978564e-15, 1.42151175831644588870e-7,
                                 1.84631831751005468180e-5,  7.86869131145613259100e-4,
                                 1.48753612908506148525e-2,  1.36929880922735805310e-1,
                                 5.99832206555887937690e-1,  1.0};
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

}  // namespace torchinit
