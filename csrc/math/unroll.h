// Loop unrolling, stated where it matters, on host and device alike.
#pragma once

#include <c10/macros/Macros.h>

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

// values[slot] through compares with constant indices: a run-time index into a local array puts
// the array in local memory (a GPU thread's stack); this keeps it in registers.
template <typename T, int N>
C10_HOST_DEVICE inline T pick(const T (&values)[N], int slot) {
  T v = values[0];
  TORCHINIT_UNROLL
  for (int k = 1; k < N; ++k) v = slot == k ? values[k] : v;
  return v;
}
