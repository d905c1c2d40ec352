// log, sin/cos of 2 pi t and the standard normal quantile, from IEEE basic operations (+ - * /
// sqrt, conversions) and fmaf, each correctly rounded on every CPU and GPU. Kernels are compiled
// without FMA contraction, so each value is bit-identical everywhere: that is why these are our
// own short polynomials rather than libm's or the device's intrinsics. The float polynomials are
// minimax fits evaluated by Horner with fmaf (docs/rng-contract.md, "Transforms", gives their
// measured errors).
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/bit_cast.h>

#include <cmath>
#include <cstdint>

#include "fused_mul_add.h"
#include "unroll.h"

namespace torchinit {

// ---- elementary functions ---------------------------------------------------------------------

// log(2^e (1 + f)) for f in [sqrt(1/2) - 1, sqrt(2) - 1): log(1 + f) = f + f^2 Q(f), with Q of
// degree 8, and e ln2 added with a single rounding (ln2 rounded to float costs < 0.2 ulp there).
template <typename Fma = Fmaf>
C10_HOST_DEVICE inline float log_f32_reduced(int32_t e, float f, Fma fma = {}) {
  constexpr float kQ[9] = {-0.0762210861f, 0.129046902f,  -0.132429764f,
                           0.141817793f,   -0.166090772f, 0.200019762f,
                           -0.250015825f,  0.333333254f,  -0.499999881f};  // highest power first
  float q = kQ[0];
  TORCHINIT_UNROLL
  for (int k = 1; k < 9; ++k) q = fma(q, f, kQ[k]);
  return fma(static_cast<float>(e), 0.693147182f, fma(q, f * f, f));
}

// Natural log for positive normal x = 2^e m, m in [sqrt(1/2), sqrt(2)) taken from the bits: the
// bits minus sqrt(1/2)'s hold e in their exponent field.
template <typename Fma = Fmaf>
C10_HOST_DEVICE inline float log_f32(float x, Fma fma = {}) {
  const uint32_t bits = c10::bit_cast<uint32_t>(x);
  const uint32_t shifted = bits - 0x3F3504F3u;  // float(sqrt(1/2))
  const float m = c10::bit_cast<float>(bits - (shifted & 0xFF800000u));
  return log_f32_reduced(static_cast<int32_t>(shifted) >> 23, m - 1.0f, fma);
}

// Log of a positive normal double to float precision. The exponent comes exactly from x, so
// probabilities far below float's range (1e-300) keep their precision. The exponent is an int32
// shifted from the high word: 64-bit arithmetic shifts have no SIMD form below AVX-512.
template <typename Fma = Fmaf>
C10_HOST_DEVICE inline float log_f32_of_f64(double x, Fma fma = {}) {
  const uint64_t bits = c10::bit_cast<uint64_t>(x);
  const uint64_t shifted = bits - 0x3FE6A09E667F3BCDull;  // sqrt(1/2)
  const double m = c10::bit_cast<double>(bits - (shifted & 0xFFF0000000000000ull));
  return log_f32_reduced(static_cast<int32_t>(static_cast<uint32_t>(shifted >> 32)) >> 20,
                         static_cast<float>(m) - 1.0f, fma);
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

// cos and sin of 2 pi t for t in [0, 1). The quadrant q and the remainder r = 4t - q in
// [-1/2, 1/2] come exactly from t, (cos, sin)(pi/2 r) are polynomials in r (float: minimax, in
// r^2, with pi/2 folded into the coefficients; double: Taylor in x = pi/2 r, truncation error
// below half an ulp), and the result is that pair rotated by q quarter turns.
template <typename T>
struct SinCos {
  T cos;
  T sin;
};

C10_HOST_DEVICE inline float flip_sign(float x, uint32_t sign_bit) {
  return c10::bit_cast<float>(c10::bit_cast<uint32_t>(x) ^ sign_bit);
}
// double by negation: the 64-bit XOR gave the float64 wide sampler's kernel a stack.
C10_HOST_DEVICE inline double flip_sign(double x, uint32_t sign_bit) {
  return sign_bit ? -x : x;
}

// (c, s) rotated by q quarter turns, q the top two bits of `turns`: swapped when q is odd, cos
// negated for q = 1, 2 (bit 31 of turns + 2^30), sin for q = 2, 3 (bit 31). In float the signs
// flip as integer XORs, the same bits as negation, so a GPU spends no compare or select on them.
template <typename T>
C10_HOST_DEVICE inline SinCos<T> rotate_quadrant(uint32_t turns, T c, T s) {
  const bool swap = turns & 0x40000000u;
  const T cq = swap ? s : c;
  const T sq = swap ? c : s;
  return {flip_sign(cq, (turns + 0x40000000u) & 0x80000000u), flip_sign(sq, turns & 0x80000000u)};
}

// t = (w >> 8) 2^-24, so q and r = 4t - q (mod 4) come from w's bits as integers: q is the top two
// bits of w + 2^29 (mod 2^32), the turns rotate_quadrant takes, and r 2^22 is the signed number in
// bits 8-29 of w, exact in float.
// sin(pi/2 r) = kHalfPi r + r^3 S(r^2): the largest term, kHalfPi r, is rounded only once, in the
// last fmaf.
template <typename Fma = Fmaf>
C10_HOST_DEVICE inline SinCos<float> sincos_2pi_f32(uint32_t w, Fma fma = {}) {
  constexpr float kHalfPi = 1.57079637f;
  constexpr float kSin[3] = {-0.00468508201f, 0.0797122121f, -0.645966649f};  // S, highest first
  constexpr float kCos[5] = {0.000903766544f, -0.0208601654f, 0.253669232f, -1.23370051f,
                             1.0f};  // cos(pi/2 r) in r^2, highest power first
  const float r = static_cast<float>(static_cast<int32_t>(w << 2) >> 10) * 0x1p-22f;
  const float r2 = r * r;
  float s = kSin[0];
  TORCHINIT_UNROLL
  for (int k = 1; k < 3; ++k) s = fma(s, r2, kSin[k]);
  float c = kCos[0];
  TORCHINIT_UNROLL
  for (int k = 1; k < 5; ++k) c = fma(c, r2, kCos[k]);
  return rotate_quadrant(w + 0x20000000u, c, fma(r, kHalfPi, r * r2 * s));
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
  return rotate_quadrant(static_cast<uint32_t>(q) << 30, c, s);
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
