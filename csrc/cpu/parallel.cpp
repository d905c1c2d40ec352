#include "parallel.h"

#include <pthread.h>

#include <atomic>

namespace torchinit::cpu {
namespace {

std::atomic<bool> forked_child{false};

void mark_forked_child() {
  forked_child.store(true, std::memory_order_relaxed);
}

// Registered when the extension loads, so a fork before its first fill is seen too.
[[maybe_unused]] const int atfork_registered = pthread_atfork(nullptr, nullptr, &mark_forked_child);

}  // namespace

bool in_forked_child() {
  return forked_child.load(std::memory_order_relaxed);
}

}  // namespace torchinit::cpu
