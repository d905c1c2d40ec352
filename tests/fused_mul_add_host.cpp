// FmafInDouble against libm's fmaf, bit for bit, on triples of the kinds the transforms use and on
// crafted and special ones (tests/test_fused_mul_add.py). A value FmafInDouble flags counts as
// fmaf's, as the CPU kernels recompute it with fmaf.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "math/fused_mul_add.h"

namespace {

using torchinit::FmafInDouble;

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

float from_bits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

struct Triple {
  float a, b, c;
};

// The kinds of triples; see make().
enum Kind : int {
  kAnyBits,     // a, b, c: any 32-bit patterns (NaN, inf, subnormals included)
  kHorner,      // p = fmaf(p, v, c_k): |p| <= 1, v in [-0.42, 0.42] or r^2 in [0, 1/4], c_k O(1)
  kOpenUnit,    // open_unit_f32's two steps
  kScaleShift,  // z * std + mean: |z| < 7, std and mean of any magnitude
  kExactTie,    // a * b exactly halfway between two floats, c 0 or near a double ulp of it
  kNearTie,     // a * b = half an ulp of c, minus or plus far less than a double ulp
  kSpecial,     // zeros, infinities, NaN, subnormals, the overflow edge, mixed with random values
  kTiny,        // results about 2^-126 and below, and ties of the subnormal grid
  kKinds
};

struct Generator {
  std::mt19937_64 rng;
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
  }
  float sign() { return (rng() & 1) ? -1.0f : 1.0f; }
  // A float with a random significand and sign, and exponent in [lo, hi].
  float scaled(int lo, int hi) {
    return sign() *
           std::ldexp(uniform(1.0f, 2.0f), std::uniform_int_distribution<int>(lo, hi)(rng));
  }
  // An odd integer of exactly n bits.
  uint32_t odd(int n) {
    return n == 1 ? 1u
                  : ((1u << (n - 1)) | (static_cast<uint32_t>(rng()) & ((1u << (n - 1)) - 1)) | 1u);
  }

  Triple make(int kind) {
    switch (kind) {
      case kAnyBits:
        return {from_bits(rng()), from_bits(rng()), from_bits(rng())};
      case kHorner:
        return {uniform(-1.0f, 1.0f), (rng() & 1) ? uniform(-0.42f, 0.42f) : uniform(0.0f, 0.25f),
                scaled(-10, 1)};
      case kOpenUnit: {
        const uint32_t x = static_cast<uint32_t>(rng());
        const float inner = std::fmaf(static_cast<float>(x & 0xFFu), 0x1p-32f, 0x1p-33f);
        return (rng() & 1) ? Triple{static_cast<float>(x >> 8), 0x1p-24f, inner}
                           : Triple{static_cast<float>(x & 0xFFu), 0x1p-32f, 0x1p-33f};
      }
      case kScaleShift:
        return {uniform(-7.0f, 7.0f), scaled(-40, 40), (rng() & 3) ? scaled(-40, 40) : 0.0f};
      case kExactTie: {
        // Odd A, B whose product has exactly 25 bits: a float's 24 and one halfway bit.
        uint32_t A, B;
        uint64_t product;
        do {
          const int la = std::uniform_int_distribution<int>(1, 24)(rng);
          A = odd(la);
          B = odd(std::max(1, std::min(24, 26 - la - static_cast<int>(rng() & 1))));
          product = static_cast<uint64_t>(A) * B;
        } while (product >> 24 != 1);
        const int ea = std::uniform_int_distribution<int>(-60, 20)(rng);
        const int eb = std::uniform_int_distribution<int>(-60, 20)(rng);
        const float a = sign() * std::ldexp(static_cast<float>(A), ea);
        const float b = sign() * std::ldexp(static_cast<float>(B), eb);
        // The double ulp of a * b, times 0, a power of 2 from 2^-40 to 2, or 3/2.
        const double ulp = std::ldexp(1.0, ea + eb + 24 - 52);
        const int choice = static_cast<int>(rng() % 6);
        double c = choice == 0   ? 0.0
                   : choice == 1 ? 1.5 * ulp
                                 : std::ldexp(ulp, -static_cast<int>(rng() % 42) + 1);
        return {a, b, static_cast<float>(sign() * c)};
      }
      case kNearTie: {
        // (2^m + 1)(2^m - 1) = 2^2m - 1, or (2^m + 1)^2 = 2^2m + 2^(m+1) + 1: half an ulp of c
        // minus or plus a part far below a double ulp.
        const int m = std::uniform_int_distribution<int>(15, 23)(rng);
        const float A = static_cast<float>((1u << m) + 1);
        const float B = static_cast<float>((rng() & 1) ? (1u << m) - 1 : (1u << m) + 1);
        const int e = std::uniform_int_distribution<int>(-60, 60)(rng);
        // c's ulp is 2^(2m + 1 + e): its half is a * b's leading bit.
        const float c = sign() * std::ldexp(uniform(1.0f, 2.0f), 2 * m + 1 + e + 23);
        const float s = sign();
        return {s * std::ldexp(A, e), B, c};
      }
      case kSpecial: {
        const float inf = std::numeric_limits<float>::infinity();
        const float specials[] = {0.0f,
                                  -0.0f,
                                  inf,
                                  -inf,
                                  NAN,
                                  -NAN,
                                  0x1p-126f,
                                  -0x1p-126f,
                                  0x1p-149f,
                                  -0x1p-149f,
                                  0x1.fffffep127f,
                                  -0x1.fffffep127f,
                                  0x1p64f,
                                  -0x1p64f,
                                  0x1.000002p64f,
                                  1.0f,
                                  -1.0f,
                                  0x1.fffffep63f};
        const int count = sizeof specials / sizeof specials[0];
        auto pick = [&] {
          const int k = static_cast<int>(rng() % (count + 2));
          return k < count    ? specials[k]
                 : k == count ? from_bits(rng())
                              : from_bits(rng() & 0x807FFFFFu);
        };
        return {pick(), pick(), pick()};
      }
      case kTiny: {
        if (rng() & 1) return {scaled(-80, -40), scaled(-100, -60), scaled(-130, -120)};
        // A subnormal c plus 2^-150 (1 - 2^-2m): a tie of the subnormal grid, minus a little.
        const int m = std::uniform_int_distribution<int>(15, 23)(rng);
        const float a = sign() * std::ldexp(static_cast<float>((1u << m) + 1), -75 - m);
        const float b = std::ldexp(static_cast<float>((1u << m) - 1), -75 - m);
        return {a, b, from_bits(static_cast<uint32_t>(rng()) & 0x807FFFFFu)};
      }
    }
    return {0.0f, 0.0f, 0.0f};
  }
};

// Over n triples of `kind` from `seed`: (mismatches, flagged, wrong if unflagged), where wrong if
// unflagged counts the triples whose double value, rounded to float, is not fmaf's: the cases
// the flag must catch.
pybind11::tuple check(int kind, int64_t n, uint64_t seed) {
  Generator g{std::mt19937_64(seed)};
  int64_t mismatches = 0, flagged = 0, wrong_if_unflagged = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Triple t = g.make(kind);
    uint32_t hard = 0;
    const float fast = FmafInDouble{&hard}(t.a, t.b, t.c);
    const float exact = std::fmaf(t.a, t.b, t.c);
    flagged += hard;
    wrong_if_unflagged += bits(fast) != bits(exact);
    mismatches += !hard && bits(fast) != bits(exact);
  }
  return pybind11::make_tuple(mismatches, flagged, wrong_if_unflagged);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("kinds") = static_cast<int>(kKinds);
  m.def("check", &check);
}
