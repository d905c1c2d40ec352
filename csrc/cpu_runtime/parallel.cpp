#include "parallel.h"

#include <ATen/Parallel.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace torchinit::cpu {
namespace {

std::atomic<bool> forked_child{false};

void mark_forked_child() {
  forked_child.store(true, std::memory_order_relaxed);
}

// Registered when the extension loads, so a fork before its first fill is seen too.
[[maybe_unused]] const int atfork_registered = pthread_atfork(nullptr, nullptr, &mark_forked_child);

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Tasks per thread at most: enough that a thread slowed down (another process on its core, page
// faults, a costlier range) takes fewer of them instead of holding the others up at the end.
constexpr int64_t kTasksPerThread = 8;

// How long the caller spins for the workers' last tasks before sleeping: a sleep and wake-up cost
// tens of microseconds, but a spinning caller takes a busy core from the thread it waits for.
constexpr auto kSpin = std::chrono::microseconds(20);

// One parallel_for call. Shared with the workers: one that wakes after the caller returned still
// reads it (and finds no task left), so fn and f, which live on the caller's stack, are called
// only for a task claimed while the caller waits for it.
struct Job {
  Job(int64_t begin, int64_t size, int64_t tasks, detail::RangeFn fn, const void* f)
      : begin(begin), quotient(size / tasks), remainder(size % tasks), tasks(tasks), fn(fn), f(f) {}

  // Task t covers [start(t), start(t + 1)): the first `remainder` tasks one element longer.
  int64_t start(int64_t t) const { return begin + t * quotient + std::min(t, remainder); }

  // Claims and runs tasks until none is left; an exception is kept for the caller, so the caller
  // too returns here only with its tasks done.
  void work() {
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < tasks;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      try {
        fn(f, start(t), start(t + 1));
      } catch (...) {
        if (!failed.exchange(true, std::memory_order_relaxed)) error = std::current_exception();
      }
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == tasks) {
        std::lock_guard<std::mutex> lock(mutex);  // the caller may be between its check and sleep
        finished.notify_one();
      }
    }
  }

  // Waits until every task is done (all are claimed once the caller's work() returns).
  void wait() {
    const auto all_done = [&] { return done.load(std::memory_order_acquire) == tasks; };
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (!all_done() && std::chrono::steady_clock::now() < until) cpu_relax();
    if (all_done()) return;
    std::unique_lock<std::mutex> lock(mutex);
    finished.wait(lock, all_done);
  }

  const int64_t begin, quotient, remainder, tasks;
  const detail::RangeFn fn;
  const void* const f;
  std::atomic<int64_t> next{0};  // the next task to claim; past `tasks` once all are claimed
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first exception; read by the caller after all tasks are done
  std::mutex mutex;
  std::condition_variable finished;
};

// Worker threads, created as needed and never destroyed: detached, since at exit a worker may
// still hold a job, and a forked child, which exits too, has none of the threads to join. Idle
// workers sleep on the condition variable: spinning would take cores from busy processes.
class Pool {
 public:
  // Makes `job` the current one and wakes `helpers` workers for it, first starting workers up to
  // that number. Where the system refuses a thread (RLIMIT_NPROC, a pids cgroup's limit), only
  // the workers there are are woken, and the caller's work() takes the other tasks.
  void post(const std::shared_ptr<Job>& job, int64_t helpers) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      try {
        for (; workers_ < helpers; ++workers_) std::thread([this] { serve(); }).detach();
      } catch (const std::system_error&) {
        helpers = workers_;  // tried again at the next loop: the limit may have been lifted
      }
      job_ = job;
      wakeups_ = helpers;  // any left over from the last job would find nothing to do
    }
    for (int64_t i = 0; i < helpers; ++i) wake_.notify_one();
  }

 private:
  void serve() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return wakeups_ > 0; });
      --wakeups_;
      const std::shared_ptr<Job> job = job_;
      lock.unlock();
      job->work();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  int64_t workers_ = 0;
  int64_t wakeups_ = 0;  // workers still to take job_
  std::shared_ptr<Job> job_;
};

// Set while a loop runs on the pool: a loop nested in one of its tasks, or started by another
// thread meanwhile, runs on its calling thread instead of waiting for the pool.
std::atomic<bool> pool_busy{false};

}  // namespace

bool in_forked_child() {
  return forked_child.load(std::memory_order_relaxed);
}

namespace detail {

void run_parallel(int64_t begin, int64_t end, int64_t grain, RangeFn fn, const void* f) {
  // torch.set_num_threads counts the calling thread; read per call, as at::parallel_for does.
  const int64_t threads = in_forked_child() ? 1 : at::get_num_threads();
  const int64_t tasks =
      std::min((end - begin) / std::max<int64_t>(grain, 1), threads * kTasksPerThread);
  if (threads < 2 || tasks < 2 || pool_busy.exchange(true, std::memory_order_acquire)) {
    fn(f, begin, end);
    return;
  }
  struct Release {
    ~Release() { pool_busy.store(false, std::memory_order_release); }
  } release;
  static Pool* const pool = new Pool;  // never destroyed: see Pool
  const auto job = std::make_shared<Job>(begin, end - begin, tasks, fn, f);
  // Only as many workers as there are tasks beyond the caller's first.
  pool->post(job, std::min(threads, tasks) - 1);
  job->work();
  job->wait();
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace detail
}  // namespace torchinit::cpu
