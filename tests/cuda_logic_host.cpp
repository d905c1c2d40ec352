// The GPU kernels' per-thread code (csrc/cuda/*.h, all host-device) run on the host, one
// simulated thread after another, so tests can compare it with the CPU kernels on machines
// without a GPU. The kernels themselves only hand these functions their indices.
#include <ATen/Dispatch_v2.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/fill_spans.h"
#include "cuda/sparse_columns.h"
#include "cuda/threads.h"
#include "plan/elementwise_fill.h"
#include "plan/fill_many.h"
#include "plan/identity_layout.h"
#include "plan/shard_index.h"

using namespace torchinit;
using namespace torchinit::cuda;

namespace {

// Calls fill(begin, end, lane) for every lane of every chunk of d, as fill_one_strided_kernel does.
template <typename Fill>
void for_each_chunk_lane(const FillDesc& d, const Fill& fill) {
  for (int64_t c = 0; c < num_chunks(d.numel); ++c) {
    for (int64_t lane = 0; lane < kThreads; ++lane) fill(c * kChunk, chunk_end(d, c), lane);
  }
}

// A thread block's queued fill, as fill_queued runs it: fills[lane] is thread lane's; every
// thread's rounds up to the next drain, then the drain by every thread.
template <typename QueuedFill>
void fill_queued_block(std::vector<QueuedFill>& fills, RedrawQueue& queue) {
  const int32_t rounds = fills[0].rounds();
  for (int32_t r = 0; r < rounds;) {
    const int32_t drain = next_drain(r, rounds);
    for (auto& fill : fills) fill.run(r, drain, queue);
    r = drain;
    uint32_t pushed = 0;
    for (int32_t lane = 0; lane < kThreads; ++lane) pushed = fills[lane].drain(queue, lane);
    queue.mark_drained(pushed);
  }
}

// Thread blocks of fill_many_kernel's grid for the queued laws: a block's queue carries over from
// one of its chunks to the next.
constexpr int64_t kManyThreadBlocks = 3;

// fill_many_ as fill_many_cuda runs it: its targets' batches, as for_each_batch makes them, each
// chunk of each batch by every lane of a thread block, as fill_many_kernel runs it (for the
// queued laws, kManyThreadBlocks blocks, each taking chunks block, block + kManyThreadBlocks, ...
// round by round with its redraw queue). Returns each launch's (targets, chunks).
std::vector<std::pair<int64_t, int64_t>> fill_many(std::vector<at::Tensor> selves,
                                                   const std::vector<std::string>& laws,
                                                   const std::vector<double>& params,
                                                   const std::vector<int64_t>& states,
                                                   const std::vector<int64_t>& full_sizes,
                                                   const std::vector<int64_t>& starts) {
  std::vector<LaunchTarget> launch_targets;
  for (const FillTarget& target :
       fill_many_targets(selves, laws, params, states, full_sizes, starts)) {
    if (target.self.numel() > 0)
      launch_targets.push_back(launch_target(target.self, target.fill, target.shard));
  }
  std::vector<std::pair<int64_t, int64_t>> launches;
  for_each_batch(launch_targets, [&](auto tag, const auto& batch) {
    using scalar_t = typename decltype(tag)::type;
    using Dist = std::decay_t<decltype(batch.dists[0])>;
    launches.emplace_back(batch.count, batch.chunks());
    if constexpr (kQueuesRedraws<Dist>) {
      for (int64_t block = 0; block < kManyThreadBlocks; ++block) {
        auto queue = std::make_unique<RedrawQueue>();
        for (int64_t c = block; c < batch.chunks(); c += kManyThreadBlocks) {
          std::vector<QueuedWideChunk<scalar_t, Dist>> fills;
          for (int32_t lane = 0; lane < kThreads; ++lane) fills.emplace_back(batch, c, lane);
          fill_queued_block(fills, *queue);
        }
      }
      return;
    }
    for (int64_t c = 0; c < batch.chunks(); ++c) {
      for (int64_t lane = 0; lane < kThreads; ++lane) {
        fill_batch_chunk<scalar_t>(batch, c, lane, kThreads);
      }
    }
  });
  copy_temporaries(launch_targets);
  return launches;
}

// Thread block `block` of fill_one_kernel's fill_queued.
template <typename scalar_t, typename Dist, typename State>
void fill_queued_block(scalar_t* data, int32_t numel, const Dist& dist, const State& state,
                       int32_t block, int32_t threads) {
  std::vector<QueuedWideFill<scalar_t, State>> fills;
  for (int32_t lane = 0; lane < kThreads; ++lane)
    fills.emplace_back(data, numel, dist, state, block * kThreads + lane, threads);
  fill_queued_block(fills, *std::make_unique<RedrawQueue>());
}

// A single uniform_, normal_ or trunc_normal_ (law and params as fill_many_ takes them, key and
// offset as philox_state gives them) as fill_one runs it on `thread_blocks` thread blocks:
// fill_one_kernel where the target takes_contiguous (its state with round keys or, `captured` in a
// CUDA graph, as the state; the wide trunc_normal_ regime's thread blocks round by round with their
// redraw queues), fill_transposed_kernel where it takes transposed_tiles (each tile's
// values by all its threads, then its stores), else fill_one_strided_kernel.
void fill_one(at::Tensor self, const std::string& law, const std::vector<double>& params,
              int64_t key, int64_t offset, int64_t thread_blocks, bool captured) {
  if (self.numel() == 0) return;
  const ElementwiseFill fill = named_fill(self, law, params);
  const PhiloxState state{static_cast<uint64_t>(key), static_cast<uint64_t>(offset)};
  const LaunchTarget target = launch_target(self, fill, ShardIndex());
  const FillDesc& d = target.desc;
  TORCHINIT_DISPATCH_FLOAT_TYPES(self.scalar_type(), "fill_one", [&] {
    visit_law<at::opmath_type<scalar_t>>(fill, [&](const auto& dist) {
      if (takes_contiguous(d)) {
        using Dist = std::decay_t<decltype(dist)>;
        const auto threads = static_cast<int32_t>(thread_blocks * kThreads);
        auto* const data = static_cast<scalar_t*>(d.data);
        const auto numel = static_cast<int32_t>(d.numel);
        const auto fill = [&](const auto& k) {
          if constexpr (kQueuesRedraws<Dist>) {
            for (int32_t block = 0; block < thread_blocks; ++block) {
              fill_queued_block(data, numel, dist, k, block, threads);
            }
          } else {
            for (int32_t thread = 0; thread < threads; ++thread) {
              fill_contiguous(data, numel, dist, k, thread, threads);
            }
          }
        };
        if (kRoundKeysInParameters<Dist> && !captured) {
          fill(round_keys(state));
        } else {
          fill(state);
        }
        return;
      }
      if (const auto tiles = transposed_tiles(d, self.element_size())) {
        Tile<at::opmath_type<scalar_t>> tile;
        for (int64_t b = 0; b < tiles->tiles(); ++b) {
          for (int t = 0; t < kTileThreads; ++t) tile_values(*tiles, dist, state, b, t, tile);
          for (int t = 0; t < kTileThreads; ++t) tile_stores<scalar_t>(*tiles, b, t, tile);
        }
        return;
      }
      for_each_chunk_lane(d, [&](int64_t begin, int64_t end, int64_t lane) {
        fill_chunk_with<scalar_t>(d, dist, state, begin, end, lane, kThreads);
      });
    });
  });
  copy_temporaries({target});
}

// sparse_ as its three kernels and the scan between them run it.
void sparse(at::Tensor self, double sparsity, double std, int64_t state, int64_t offset) {
  const int64_t rows = self.size(0);
  const FloydChoice choice = floyd_choice(rows, sparsity);
  const SparseColumns p{rows, self.size(1), choice.count, choice.chosen_are_zeros};
  const PhiloxState k{static_cast<uint64_t>(state), static_cast<uint64_t>(offset)};
  std::vector<uint64_t> masks(p.groups() * rows, 0);
  for (int64_t c = 0; c < p.cols; ++c) {
    uint64_t* const row_masks = masks.data() + (c / 64) * rows;
    const uint64_t flag = uint64_t{1} << (c % 64);
    p.choose(k, c, [&](uint64_t r) {
      const bool was = row_masks[r] & flag;
      row_masks[r] |= flag;
      return was;
    });
  }
  std::vector<int64_t> ends(rows * p.groups());
  int64_t total = 0;
  for (int64_t i = 0; i < rows * p.groups(); ++i) {
    total += popcount64(p.nonzeros(masks.data(), i % p.groups(), i / p.groups()));
    ends[i] = total;
  }
  TORCHINIT_DISPATCH_FLOAT_TYPES(self.scalar_type(), "sparse", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Normal<acc_t> normal{acc_t(0), static_cast<acc_t>(std)};
    auto* data = self.data_ptr<scalar_t>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < p.cols; ++c) {
        data[r * self.stride(0) + c * self.stride(1)] =
            static_cast<scalar_t>(p.value(masks.data(), ends.data(), normal, k, r, c));
      }
    }
  });
}

// The element offsets identity_ones_kernel writes for eye_ (groups = 0) or dirac_, thread k's
// k-th; none for an empty tensor, which fill_identity leaves before any launch.
std::vector<int64_t> one_offsets(const at::Tensor& self, int64_t groups) {
  const IdentityLayout layout =
      groups == 0 ? IdentityLayout::eye(self) : IdentityLayout::dirac(self, groups);
  const OnePlaces ones = layout.in_memory(self);
  std::vector<int64_t> offsets(self.numel() == 0 ? 0 : layout.num_ones);
  for (int64_t k = 0; k < static_cast<int64_t>(offsets.size()); ++k) offsets[k] = ones(k);
  return offsets;
}

// eye_ or dirac_ as fill_identity runs it: its zeros (a dense tensor's bytes as one memset, any
// other view's elements by ATen's fill), then a 1 at each of one_offsets.
void identity(at::Tensor self, int64_t groups) {
  const std::vector<int64_t> offsets = one_offsets(self, groups);
  if (self.numel() == 0) return;
  if (self.is_non_overlapping_and_dense()) {
    std::memset(self.data_ptr(), 0, self.nbytes());
  } else {
    self.zero_();
  }
  AT_DISPATCH_V2(self.scalar_type(), "identity", AT_WRAP([&] {
                   for (const int64_t offset : offsets)
                     self.data_ptr<scalar_t>()[offset] = scalar_t(1);
                 }),
                 TORCHINIT_FILL_DTYPES);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fill_many", &fill_many);
  m.def("fill_one", &fill_one);
  m.def("sparse", &sparse);
  m.def("identity", &identity);
  m.def("one_offsets", &one_offsets);
}
