// Uniform and normal (Box-Muller) values from Philox blocks, shared by the CPU and CUDA kernels.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "../math/elementary.h"
#include "../rng/philox.h"
#include "../rng/unit_interval.h"

namespace torchinit {

// ---- Box-Muller --------------------------------------------------------------------------------

// Two independent standard normals from two independent words (float) or word pairs (double).
template <typename Fma = Fmaf>
C10_HOST_DEVICE inline SinCos<float> box_muller_f32(uint32_t radius_bits, uint32_t angle_bits,
                                                    Fma fma = {}) {
  const float r = sqrtf(-2.0f * log_f32(open_unit_f32(radius_bits, fma), fma));
  const SinCos<float> cs = sincos_2pi_f32(angle_bits, fma);
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
  template <typename Fma = Fmaf>
  C10_HOST_DEVICE void operator()(PhiloxBlock b, float* out, Fma fma = {}) const {
    const SinCos<float> z01 = box_muller_f32(b.w[0], b.w[1], fma);
    const SinCos<float> z23 = box_muller_f32(b.w[2], b.w[3], fma);
    out[0] = fma(z01.cos, std, mean);
    out[1] = fma(z01.sin, std, mean);
    out[2] = fma(z23.cos, std, mean);
    out[3] = fma(z23.sin, std, mean);
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
