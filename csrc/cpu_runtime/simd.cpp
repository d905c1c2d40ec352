#include "simd.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace torchinit::cpu {
namespace {

constexpr const char* kEnvironmentVariable = "TORCHINIT_CPU_CAPABILITY";

SimdLevel detect_simd_level() {
#if TORCHINIT_X86_SIMD
  // Both levels use FMA (simd.h). Every CPU with AVX2 or AVX-512 has it, but it is a separate flag.
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("fma")) return SimdLevel::kDefault;
  if (__builtin_cpu_supports("avx512f")) return SimdLevel::kAvx512;
  if (__builtin_cpu_supports("avx2")) return SimdLevel::kAvx2;
#endif
  return SimdLevel::kDefault;
}

std::string simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512:
      return "avx512";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kDefault:
      break;
  }
  return "default";
}

// The level named `name`, if any.
std::optional<SimdLevel> find_simd_level(const std::string& name) {
  for (const SimdLevel level : {SimdLevel::kDefault, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (name == simd_level_name(level)) return level;
  }
  return std::nullopt;
}

// The supported level, lowered by TORCHINIT_CPU_CAPABILITY. A name that is no level, or a level
// above the CPU's, is ignored (torchinit_ext's import warns of it: a typo must not stop a program).
SimdLevel automatic_simd_level() {
  const SimdLevel supported = supported_simd_level();
  const char* requested = std::getenv(kEnvironmentVariable);
  const std::optional<SimdLevel> level = requested ? find_simd_level(requested) : std::nullopt;
  return level ? std::min(*level, supported) : supported;
}

// -1 until the first use, which reads the environment.
std::atomic<int> current_level{-1};

}  // namespace

SimdLevel supported_simd_level() {
  static const SimdLevel supported = detect_simd_level();
  return supported;
}

SimdLevel simd_level() {
  int level = current_level.load(std::memory_order_relaxed);
  if (level < 0) {
    level = static_cast<int>(automatic_simd_level());
    current_level.store(level, std::memory_order_relaxed);
  }
  return static_cast<SimdLevel>(level);
}

namespace {

std::string cpu_capability() {
  return simd_level_name(simd_level());
}

std::vector<std::string> supported_cpu_capabilities() {
  std::vector<std::string> names;
  for (int level = static_cast<int>(supported_simd_level()); level >= 0; --level)
    names.push_back(simd_level_name(static_cast<SimdLevel>(level)));
  return names;
}

// None: the automatic choice again.
void set_cpu_capability(const std::optional<std::string>& level) {
  std::optional<SimdLevel> chosen = level ? find_simd_level(*level) : automatic_simd_level();
  TORCH_CHECK_VALUE(chosen, "level must be one of 'avx512', 'avx2' or 'default', got '", *level,
                    "'");
  TORCH_CHECK_VALUE(*chosen <= supported_simd_level(), "level '", *level,
                    "' is not supported by this CPU (it supports at most '",
                    simd_level_name(supported_simd_level()), "')");
  current_level.store(static_cast<int>(*chosen), std::memory_order_relaxed);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CompositeExplicitAutograd, m) {
  m.impl("cpu_capability", &cpu_capability);
  m.impl("supported_cpu_capabilities", &supported_cpu_capabilities);
  m.impl("set_cpu_capability", &set_cpu_capability);
}

}  // namespace torchinit::cpu
