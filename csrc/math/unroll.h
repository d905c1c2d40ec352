// Loop unrolling, stated where it matters, on host and device alike.
#pragma once

// Full unrolling of fixed-count loops: it keeps a loop's constants in registers (Philox's rounds,
// the quantile's polynomials).
#if defined(__CUDACC__)
#define TORCHINIT_UNROLL _Pragma("unroll")
#else
#define TORCHINIT_UNROLL _Pragma("GCC unroll 16")
#endif

// No unrolling of a run-time-count loop over dimensions, whose body holds 64-bit divisions: for
// sm_100 and later, nvcc unrolls such loops up to their bound (kMaxDims), which multiplies the
// CUDA build's time there (figures: docs/cuda.md, "Building"). The host compiler keeps its own
// judgement.
#if defined(__CUDACC__)
#define TORCHINIT_NO_UNROLL _Pragma("unroll 1")
#else
#define TORCHINIT_NO_UNROLL
#endif
