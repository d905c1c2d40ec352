// The SIMD level of the CPU kernels, chosen at run time: the best the CPU has, or a lower one
// named by TORCHINIT_CPU_CAPABILITY (avx512, avx2 or default), as ATen's ATEN_CPU_CAPABILITY, so
// every path can be tested and measured on one machine. The build itself must run on any x86-64:
// only functions compiled for a level (with_simd_level) use its instructions. Kernels use IEEE
// basic operations and explicit fmaf, without FMA contraction, so every level computes the same
// bits. Both levels have FMA (avx512f implies it), so fmaf vectorizes to vfmadd; the default level
// computes fmaf's value in double where it can, and with libm's fmaf elsewhere (fused_mul_add.h).
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TORCHINIT_X86_SIMD 1
#include <immintrin.h>
#define TORCHINIT_TARGET_AVX512 __attribute__((target("avx512f")))
#define TORCHINIT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define TORCHINIT_X86_SIMD 0
#endif

namespace torchinit::cpu {

enum class SimdLevel : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

// The level the kernels run with now.
SimdLevel simd_level();
// The best level this CPU supports.
SimdLevel supported_simd_level();

template <SimdLevel L>
using SimdTag = std::integral_constant<SimdLevel, L>;

namespace simd_impl {
// Each runs f(SimdTag<L>{}) with f and everything it calls inlined (flatten) into a function
// compiled for L, so the compiler vectorizes the whole kernel for that level.
template <typename F>
__attribute__((flatten)) void run_default(const F& f) {
  f(SimdTag<SimdLevel::kDefault>{});
}
#if TORCHINIT_X86_SIMD
template <typename F>
TORCHINIT_TARGET_AVX2 __attribute__((flatten)) void run_avx2(const F& f) {
  f(SimdTag<SimdLevel::kAvx2>{});
}
// GCC 12's AVX-512 intrinsics start from a deliberately undefined vector (`__Y = __Y`), which
// -Wmaybe-uninitialized reports at each use inlined here. GCC honours the pragma along the
// inlining chain; around the #include it would not hold, as torch's headers may include
// immintrin.h first.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <typename F>
TORCHINIT_TARGET_AVX512 __attribute__((flatten)) void run_avx512(const F& f) {
  f(SimdTag<SimdLevel::kAvx512>{});
}
#pragma GCC diagnostic pop
#endif
}  // namespace simd_impl

// Runs f(SimdTag<simd_level()>{}), compiled for that level. f must return nothing and call only
// functions that can be inlined (templates and inline functions): an out-of-line call runs
// baseline code.
template <typename F>
void with_simd_level(const F& f) {
#if TORCHINIT_X86_SIMD
  switch (simd_level()) {
    case SimdLevel::kAvx512:
      return simd_impl::run_avx512(f);
    case SimdLevel::kAvx2:
      return simd_impl::run_avx2(f);
    case SimdLevel::kDefault:
      break;
  }
#endif
  simd_impl::run_default(f);
}

}  // namespace torchinit::cpu
