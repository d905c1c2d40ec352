// Random bits -> the unit interval: the float and double conversions every law starts from.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "../math/fused_mul_add.h"

namespace torchinit {

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
// Box-Muller's tail reaches sqrt(66 ln 2) = 6.8 sigma (mass beyond that: 1e-11). The value is
// (x >> 8) 2^-24 + ((x & 0xFF) + 0.5) 2^-32: both terms are exact and fmaf rounds their sum once.
template <typename Fma = Fmaf>
C10_HOST_DEVICE inline float open_unit_f32(uint32_t x, Fma fma = {}) {
  return fma(static_cast<float>(x >> 8), 0x1p-24f,
             fma(static_cast<float>(x & 0xFFu), 0x1p-32f, 0x1p-33f));
}

// (0, 1], smallest value 2^-65: the double tail reaches 9.5 sigma.
C10_HOST_DEVICE inline double open_unit_f64(uint32_t lo, uint32_t hi) {
  return top53_f64(lo, hi) * 0x1p-53 + (static_cast<double>(lo & 0x7FFu) + 0.5) * 0x1p-64;
}

}  // namespace torchinit
