// CPU kernels of the elementwise fills (uniform_, normal_, trunc_normal_, and fill_many_, which
// runs many of them, constants included, in one parallel region), and the raw Philox stream.
#include <ATen/Dispatch_v2.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../plan/elementwise_fill.h"
#include "../plan/fill_many.h"
#include "../plan/shard_index.h"
#include "../samplers/trunc_normal.h"
#include "../samplers/uniform_normal.h"
#include "random_fill.h"

namespace torchinit::cpu {
namespace {

// Writes the values of elements [begin, end) of the logical tensor a law fills to dst: whole
// SIMD batches of Philox blocks, then the rejected redrawn (TruncNormalWide) or element by
// element (TruncNormalRejection, whose attempts vary in number).
template <typename acc_t>
struct Produce {
  PhiloxState state;
  acc_t* dst;
  int64_t begin, end;

  void operator()(const Constant<acc_t>& dist) const {
    std::fill(dst, dst + (end - begin), dist.value);
  }
  // A template, so that overload resolution for a double law names no TruncNormalWide<double>.
  template <typename T>
  void operator()(const TruncNormalWide<T>& dist) const {
    with_simd_level([&](auto level) {
      constexpr SimdLevel L = decltype(level)::value;
      generate_range<L>(dist, state, dst, begin, end);
      resample_rejected<L>(dist, state, dst, begin, end);  // ranges are at most kBufferElements
    });
  }
  void operator()(const TruncNormalRejection<acc_t>& dist) const {
    for (int64_t i = begin; i < end; ++i) dst[i - begin] = dist.sample(state, i);
  }
  template <typename Dist>
  void operator()(const Dist& dist) const {
    generate_range(dist, state, dst, begin, end);
  }
};

// Writes local elements [begin, end) of one target.
void fill_target_range(const FillTarget& target, int64_t begin, int64_t end) {
  TORCHINIT_DISPATCH_FLOAT_TYPES(target.self.scalar_type(), "fill_", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    fill_logical_range<scalar_t, acc_t>(
        target.self,
        [&](acc_t* dst, int64_t local_begin, int64_t local_end) {
          target.shard.for_each_run(local_begin, local_end, [&](int64_t at, int64_t b, int64_t e) {
            visit_law<acc_t>(target.fill, Produce<acc_t>{target.fill.state, dst + at, b, e});
          });
        },
        begin, end);
  });
}

// All targets' elements as one index space, cut into parallel_for's tasks: small tensors share
// tasks, so a model's biases and norms cost no parallel region each. No finer than parallel_for's
// few tasks per thread: finer ones would have the threads write the same cache lines of a
// transposed view at once.
void fill_targets(const std::vector<FillTarget>& targets) {
  std::vector<int64_t> first(targets.size() + 1, 0);
  for (size_t t = 0; t < targets.size(); ++t) {
    first[t + 1] = first[t] + targets[t].self.numel();
    prepare_memory(targets[t].self);
  }
  parallel_for(0, first.back(), kGrain, [&](int64_t begin, int64_t end) {
    auto t = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), begin) -
                                 first.begin() - 1);
    for (; t < targets.size() && first[t] < end; ++t) {
      const int64_t lo = std::max(begin, first[t]) - first[t];
      const int64_t hi = std::min(end, first[t + 1]) - first[t];
      if (lo < hi) fill_target_range(targets[t], lo, hi);
    }
  });
}

// Draws the Philox state of a single-tensor fill (none for an empty tensor, as stock) and runs it.
void fill_one(const at::Tensor& self, ElementwiseFill fill,
              const std::optional<at::Generator>& generator) {
  if (self.numel() == 0) return;
  fill.state = draw_philox_state(generator);
  fill_targets({FillTarget{self, fill, ShardIndex()}});
}

void uniform_cpu(at::Tensor& self, double a, double b, std::optional<at::Generator> generator) {
  fill_one(self, uniform_fill(self, a, b), generator);
}

void normal_cpu(at::Tensor& self, double mean, double std, std::optional<at::Generator> generator) {
  fill_one(self, normal_fill(self, mean, std), generator);
}

void trunc_normal_cpu(at::Tensor& self, double mean, double std, double a, double b,
                      std::optional<at::Generator> generator) {
  fill_one(self, trunc_normal_fill(self, mean, std, a, b), generator);
}

void fill_many_cpu(at::TensorList selves, const std::vector<std::string>& laws,
                   c10::ArrayRef<double> params, c10::IntArrayRef states,
                   c10::IntArrayRef full_sizes, c10::IntArrayRef shard_starts) {
  fill_targets(fill_many_targets(selves, laws, params, states, full_sizes, shard_starts));
}

std::vector<int64_t> philox_state_cpu(const at::Tensor&, std::optional<at::Generator> generator) {
  const PhiloxState state = draw_philox_state(generator);
  return {static_cast<int64_t>(state.key), static_cast<int64_t>(state.offset)};
}

at::Tensor philox_blocks(int64_t key, int64_t offset, int64_t num_blocks) {
  TORCH_CHECK_VALUE(num_blocks >= 0, "philox_blocks: num_blocks must be >= 0, got ", num_blocks);
  at::Tensor out = at::empty({num_blocks, 4}, at::kInt);
  auto* words = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  const PhiloxState state{static_cast<uint64_t>(key), static_cast<uint64_t>(offset)};
  parallel_for(0, num_blocks, kGrain / 4, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const PhiloxBlock block = philox4x32_10(static_cast<uint64_t>(b), state);
      std::copy(block.w, block.w + 4, words + 4 * b);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CPU, m) {
  m.impl("uniform_", &uniform_cpu);
  m.impl("normal_", &normal_cpu);
  m.impl("trunc_normal_", &trunc_normal_cpu);
  m.impl("fill_many_", &fill_many_cpu);
  m.impl("philox_state", &philox_state_cpu);
}

TORCH_LIBRARY_IMPL(torchinit_ext, CompositeExplicitAutograd, m) {
  m.impl("philox_blocks", &philox_blocks);
}

}  // namespace torchinit::cpu
