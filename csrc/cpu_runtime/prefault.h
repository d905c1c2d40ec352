// Maps the missing pages of memory about to be written in one kernel entry per piece instead of
// one page fault per 4 KiB page. Fresh memory (a model's parameters right after allocation) costs
// a fault per page on first write, and where page tables are virtualized a fault costs more than
// writing the page (figures: benchmarks/README.md, "Tuning constants").
// MADV_POPULATE_WRITE (Linux 5.14+) maps a range as writing it would, without touching the data,
// far cheaper per page than the faults. It walks resident pages slowly, so mincore
// first skips pieces that are already mapped. Before that, a large fill of unmapped memory asks
// for transparent huge pages (MADV_HUGEPAGE) on the 2 MiB-aligned part inside the tensor: one
// fault maps 2 MiB instead of 4 KiB, and no page reaches outside the tensor's own bytes, so the
// memory used is the same. Not in a VM whose balloon takes back free memory (free page
// reporting): it hands freed 2 MiB blocks to the host, so a huge page is usually one the host
// must map again, 4 KiB at a time, slower than reused 4 KiB pages (docs/design.md).
// TORCHINIT_HUGE_PAGES=0 or 1 turns them off or on regardless. Only optimizations: any failure
// leaves the pages to ordinary faults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>

#include <dirent.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <string>
#endif

namespace torchinit::cpu {

// Bytes mapped at a time: the size a thread writes before mapping the next piece, small enough
// that the kernel's zeroing of a piece is still in cache when the fill overwrites it.
constexpr size_t kPrefaultBytes = size_t{1} << 20;
constexpr size_t kPage = 4096;
constexpr uintptr_t kHugePage = uintptr_t{1} << 21;

#if defined(__linux__)

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // linux/mman.h; older C libraries lack the name
#endif

// Maps the pages lying wholly inside [begin, begin + bytes), which must be at most
// kPrefaultBytes, unless they all are mapped already.
inline void prefault_for_write(void* begin, size_t bytes) {
  static std::atomic<bool> unsupported{sysconf(_SC_PAGESIZE) != kPage};
  if (unsupported.load(std::memory_order_relaxed)) return;
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + kPage - 1) & ~(kPage - 1);
  const uintptr_t last = (reinterpret_cast<uintptr_t>(begin) + bytes) & ~(kPage - 1);
  if (last <= first) return;
  unsigned char resident[kPrefaultBytes / kPage];
  const size_t pages = (last - first) / kPage;
  if (mincore(reinterpret_cast<void*>(first), last - first, resident) != 0) return;
  bool all_resident = true;
  for (size_t p = 0; p < pages; ++p) all_resident &= (resident[p] & 1) != 0;
  if (all_resident) return;
  if (madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE) != 0 &&
      errno == EINVAL) {
    unsupported.store(true, std::memory_order_relaxed);  // a kernel before 5.14: stop trying
  }
}

// Whether a virtio balloon offers free page reporting (feature bit 5, VIRTIO_BALLOON_F_REPORTING;
// sysfs lists a device's feature bits as '0'/'1' characters, bit 0 first).
inline bool free_pages_go_to_host() {
  const std::string driver = "/sys/bus/virtio/drivers/virtio_balloon/";
  DIR* folder = opendir(driver.c_str());
  if (folder == nullptr) return false;
  bool reporting = false;
  while (const dirent* entry = readdir(folder)) {
    if (std::strncmp(entry->d_name, "virtio", 6) != 0) continue;
    std::string features;
    std::ifstream(driver + entry->d_name + "/features") >> features;
    reporting |= features.size() > 5 && features[5] == '1';
  }
  closedir(folder);
  return reporting;
}

inline bool huge_pages_allowed() {
  static const bool allowed = [] {
    const char* setting = std::getenv("TORCHINIT_HUGE_PAGES");
    if (setting != nullptr && std::strcmp(setting, "0") == 0) return false;
    if (setting != nullptr && std::strcmp(setting, "1") == 0) return true;
    return !free_pages_go_to_host();
  }();
  return allowed;
}

// Asks for huge pages on the whole 2 MiB pages inside [begin, begin + bytes) when its first one
// is not mapped yet (fresh memory; written memory keeps its pages). Call it once per tensor,
// before the threads populate and write it.
inline void advise_huge_pages(void* begin, size_t bytes) {
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t last = (reinterpret_cast<uintptr_t>(begin) + bytes) & ~(kHugePage - 1);
  if (last <= first || !huge_pages_allowed()) return;
  unsigned char resident = 0;
  if (mincore(reinterpret_cast<void*>(first), kPage, &resident) != 0 || (resident & 1)) return;
  madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}

#else

inline void prefault_for_write(void*, size_t) {}
inline void advise_huge_pages(void*, size_t) {}

#endif

}  // namespace torchinit::cpu
