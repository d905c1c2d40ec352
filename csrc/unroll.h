// Full unrolling of fixed-count loops, on host and device alike: it keeps a loop's constants in
// registers (Philox's rounds, the quantile's polynomials).
#pragma once

#if defined(__CUDACC__)
#define TORCHINIT_UNROLL _Pragma("unroll")
#else
#define TORCHINIT_UNROLL _Pragma("GCC unroll 16")
#endif
