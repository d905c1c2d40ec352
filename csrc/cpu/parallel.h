// The parallel loop of the CPU kernels. A process forked after any OpenMP parallel region (ours
// or torch's) hangs in its next one, since libgomp's thread pool does not survive fork(): fills
// in a forked child run on the calling thread instead, as stock's serial fills do.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace torchinit::cpu {

// Whether this process was forked from the one that loaded the extension (pthread_atfork).
bool in_forked_child();

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (!in_forked_child()) {
    at::parallel_for(begin, end, grain, f);
  } else if (begin < end) {
    f(begin, end);
  }
}

}  // namespace torchinit::cpu
