// The fused multiply-add of the float transforms, as a function object the shared code takes as a
// parameter, so that the CPU's default SIMD level (no FMA instruction) can swap in a form that
// vectorizes. Every form returns fmaf's bits.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/bit_cast.h>

#include <cmath>
#include <cstdint>

namespace torchinit {

// fmaf itself: FFMA on the GPU, vfmadd at the AVX2 and AVX-512 levels, libm's fmaf elsewhere.
struct Fmaf {
  C10_HOST_DEVICE float operator()(float a, float b, float c) const { return fmaf(a, b, c); }
};

// a * b + c in double, rounded to float, for code that then recomputes with Fmaf every value whose
// *hard is set. The product of two floats is exact in double, so s is a * b + c rounded once to
// double, and rounding s to float gives fmaf's value unless that second rounding meets a tie the
// exact sum is not on: s exactly halfway between two floats (its 29 low significand bits
// 0x10000000, for |s| >= 2^-126) and inexact. s is exact iff s - p == c and s - c == p (the one
// of the larger magnitude is exact: Fast2Sum). Inexact ties, |result| <= 2^-126 (where the
// halfway points lie elsewhere; zero too) and NaN (whose bits libm may choose otherwise) set
// *hard: rare enough that a test of a few vector instructions beats an exact form.
struct FmafInDouble {
  uint32_t* hard;
  float operator()(float a, float b, float c) const {
    const double p = static_cast<double>(a) * static_cast<double>(b);
    const double d = static_cast<double>(c);
    const double s = p + d;
    const float r = static_cast<float>(s);
    const bool tie =
        (static_cast<uint32_t>(c10::bit_cast<uint64_t>(s)) & 0x1FFFFFFFu) == 0x10000000u;
    const bool inexact = (s - p != d) | (s - d != p);
    // Unsigned wrap-around: a magnitude outside (2^-126, inf] is at least 0x7F000000.
    const bool outside = (c10::bit_cast<uint32_t>(r) & 0x7FFFFFFFu) - 0x00800001u >= 0x7F000000u;
    *hard |= static_cast<uint32_t>((tie & inexact) | outside);
    return r;
  }
};

}  // namespace torchinit
