// The parallel loop of the CPU kernels, on a thread pool of our own instead of at::parallel_for's
// OpenMP regions. An OpenMP region ends in a barrier that waits for every thread of the team, even
// one not yet scheduled: with other processes busy on the cores, a fill would wait for threads
// the system has not run. Here the calling thread always works, the range is cut into a few
// tasks per thread that whoever is running takes in turn, and the caller waits only for tasks
// already taken: a worker that wakes late finds none left and drops the job.
//
// Values never depend on which thread writes which range (the fills are counter-based), so a loop
// that cannot use the pool runs on the calling thread: one nested in a task, one started while
// another thread's loop holds the pool, any in a forked child (the pool's threads do not survive
// fork(), as libgomp's did not), and the share of workers the system would not start.
#pragma once

#include <algorithm>
#include <cstdint>

namespace torchinit::cpu {

// Whether this process was forked from the one that loaded the extension (pthread_atfork).
bool in_forked_child();

namespace detail {
using RangeFn = void (*)(const void* f, int64_t begin, int64_t end);
// Runs fn(f, b, e) over [begin, end) in tasks of at least `grain` elements on the pool.
void run_parallel(int64_t begin, int64_t end, int64_t grain, RangeFn fn, const void* f);
}  // namespace detail

// Calls f(b, e) on disjoint ranges covering [begin, end), each of at least `grain` elements (but
// when the whole range is shorter), and returns when all are done; rethrows the first exception
// any call threw.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
  if (end - begin < 2 * std::max<int64_t>(grain, 1)) {  // one task: no pool, no synchronisation
    f(begin, end);
    return;
  }
  detail::run_parallel(
      begin, end, grain,
      [](const void* p, int64_t b, int64_t e) { (*static_cast<const F*>(p))(b, e); }, &f);
}

}  // namespace torchinit::cpu
