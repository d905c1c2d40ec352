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

// [0, 1) on a grid of 2^-53.
C10_HOST_DEVICE inline double unit_f64(uint32_t lo, uint32_t hi) {
  const uint64_t v = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return static_cast<double>(v) * 0x1p-53;
}

// (0, 1], never 0 so log is finite. All 32 bits are used, so the smallest value is 2^-33 and
// Box-Muller's tail reaches sqrt(66 ln 2) = 6.8 sigma (mass beyond that: 1e-11).
C10_HOST_DEVICE inline float open_unit_f32(uint32_t x) {
  return static_cast<float>(x >> 8) * 0x1p-24f +
         (static_cast<float>(x & 0xFFu) + 0.5f) * 0x1p-32f;
}

// (0, 1], smallest value 2^-65: the double tail reaches 9.5 sigma.
C10_HOST_DEVICE inline double open_unit_f64(uint32_t lo, uint32_t hi) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<double>(v >> 11) * 0x1p-53 +
         (static_cast<double>(v & 0x7FFu) + 0.5) * 0x1p-64;
}

// ---- elementary functions from basic operations -----------------------------------------------

// Natural log for positive normal x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, as an odd series in s.
C10_HOST_DEVICE inline float log_f32(float x) {
  const uint32_t bits = c10::bit_cast<uint32_t>(x);
  int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  float m = c10::bit_cast<float>((bits & 0x7FFFFFu) | 0x3F800000u);
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

C10_HOST_DEVICE inline double log_f64(double x) {
  const uint64_t bits = c10::bit_cast<uint64_t>(x);
  int64_t e = static_cast<int64_t>(bits >> 52) - 1023;
  double m = c10::bit_cast<double>((bits & 0xFFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  const bool big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  e = big ? e + 1 : e;
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double series = 1.0 / 23;
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

}  // namespace torchinit
