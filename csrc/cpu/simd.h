// Runtime-selected SIMD paths. The default build must run on any x86-64: GCC's function
// multiversioning picks AVX-512 or AVX2 code at run time. Kernels use only IEEE basic operations
// without FMA contraction, so every path computes the same bits.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TORCHINIT_X86_MULTIVERSION 1
#include <immintrin.h>
// Whole functions cloned per SIMD level (the compiler vectorizes each clone for its level).
#define TORCHINIT_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TORCHINIT_X86_MULTIVERSION 0
#define TORCHINIT_SIMD_CLONES
#endif
