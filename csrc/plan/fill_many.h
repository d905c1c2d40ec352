// fill_many_'s plan: its flat arguments (laws by name, parameters, Philox states, and the shards'
// full sizes and shard starts) turned into one checked target per tensor, before anything is
// written.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "elementwise_fill.h"
#include "op_table.h"
#include "shard_index.h"

namespace torchinit {

// One target of a multi-tensor fill.
struct FillTarget {
  at::Tensor self;
  ElementwiseFill fill;
  ShardIndex shard;
};

// The targets of fill_many_, checked (including that no two of them share memory)
// before anything is written.
inline std::vector<FillTarget> fill_many_targets(
    at::TensorList selves, const std::vector<std::string>& laws, c10::ArrayRef<double> params,
    c10::IntArrayRef states, c10::IntArrayRef full_sizes, c10::IntArrayRef starts) {
  const size_t n = selves.size();
  TORCH_CHECK_VALUE(laws.size() == n && params.size() == 4 * n && states.size() == 2 * n,
                    "fill_many_: ", n, " tensors need ", n, " laws, ", 4 * n, " params and ", 2 * n,
                    " states, got ", laws.size(), ", ", params.size(), " and ", states.size());
  TORCH_CHECK_VALUE(full_sizes.size() == starts.size(),
                    "fill_many_: full_sizes and shard_starts differ in length");
  const bool shards = !full_sizes.empty();
  // One device: the dispatcher runs one backend's kernel for the whole list.
  for (size_t t = 1; t < n; ++t) {
    TORCH_CHECK_VALUE(selves[t].device() == selves[0].device(), "fill_many_: selves[", t,
                      "] is on ", selves[t].device(), " but selves[0] is on ", selves[0].device(),
                      "; all tensors of one call must be on one device");
  }
  std::vector<FillTarget> targets;
  targets.reserve(n);
  size_t dims = 0;
  for (size_t t = 0; t < n; ++t) {
    const at::Tensor& self = selves[t];
    ElementwiseFill fill = named_fill(self, laws[t], params.slice(4 * t, 4));
    fill.state = {static_cast<uint64_t>(states[2 * t]), static_cast<uint64_t>(states[2 * t + 1])};
    ShardIndex shard;
    if (shards) {
      const auto ndim = static_cast<size_t>(self.dim());
      TORCH_CHECK_VALUE(dims + ndim <= full_sizes.size(), "fill_many_: full_sizes is too short");
      shard = ShardIndex(self, full_sizes.slice(dims, ndim), starts.slice(dims, ndim));
      dims += ndim;
    }
    targets.push_back({self, fill, std::move(shard)});
  }
  TORCH_CHECK_VALUE(dims == full_sizes.size(), "fill_many_: full_sizes is too long");
  // Tensors that share memory are next to each other in storage order.
  std::vector<std::pair<const void*, size_t>> by_storage;
  for (size_t t = 0; t < n; ++t) {
    if (!selves[t].is_meta()) by_storage.emplace_back(selves[t].storage().data(), t);
  }
  std::sort(by_storage.begin(), by_storage.end());
  for (size_t i = 0; i < by_storage.size(); ++i) {
    for (size_t j = i + 1; j < by_storage.size() && by_storage[j].first == by_storage[i].first;
         ++j) {
      const size_t t = by_storage[i].second, u = by_storage[j].second;
      TORCH_CHECK_VALUE(at::get_overlap_status(selves[t], selves[u]) == at::MemOverlapStatus::No,
                        "fill_many_: tensors ", std::min(t, u), " and ", std::max(t, u),
                        " share memory");
    }
  }
  return targets;
}

}  // namespace torchinit
