// The GPU's elementwise fills (fill_many_ and the single uniform_/normal_/trunc_normal_) as
// host-device code: what one thread computes and stores. The kernels in random.cu only hand out
// chunks or spans; tests run this same code on the host against the CPU kernels
// (test_cuda_logic.py).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "../math/unroll.h"
#include "../plan/elementwise_fill.h"
#include "../plan/shard_index.h"
#include "strided_layout.h"

namespace torchinit::cuda {

// Elements per thread step: one Philox block of float values, stored as one vector.
constexpr int kSpan = 4;
// Elements per chunk, the unit a thread block takes (a multiple of kSpan, so spans are aligned to
// Philox blocks).
constexpr int64_t kChunk = 8192;

// A target's logical index -> index in the logical tensor whose values it takes (ShardIndex, its
// dimensions merged: none for a whole tensor or a block of whole rows).
struct FullIndex {
  int32_t ndim;  // 0: the range base, base + 1, ... (base 0: the identity)
  int64_t base;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];

  C10_HOST_DEVICE uint64_t operator()(int64_t i) const {
    return static_cast<uint64_t>(full_index(i, ndim, sizes, strides, base));
  }
  // Whether spans s, s + kSpan, ... take the Philox-block-aligned spans base + s, ...: the fast
  // path of fill_chunk_with.
  C10_HOST_DEVICE bool aligned_range() const { return ndim == 0 && base % kSpan == 0; }
};

// One target of a GPU fill, as plain data.
struct FillDesc {
  void* data;
  c10::ScalarType dtype;
  bool vector_stores;  // contiguous, and aligned for kSpan-element stores
  int64_t numel;
  ElementwiseFill fill;
  StridedLayout layout;
  FullIndex full;
};

// The target's description; nullopt when its layout needs a contiguous temporary (then describe
// the temporary). Throws, before anything is written, for blocks of tensors over kMaxDims dims.
inline std::optional<FillDesc> describe(const at::Tensor& self, const ElementwiseFill& fill,
                                        const ShardIndex& shard) {
  const std::optional<StridedLayout> layout = strided_layout(self);
  if (!layout) return std::nullopt;
  FillDesc desc{};
  desc.data = self.data_ptr();
  desc.dtype = self.scalar_type();
  desc.numel = self.numel();
  desc.vector_stores = layout->ndim == 0 &&
                       reinterpret_cast<uintptr_t>(desc.data) % (kSpan * self.element_size()) == 0;
  desc.fill = fill;
  desc.layout = *layout;
  const auto ndim = static_cast<int32_t>(shard.sizes().size());
  TORCH_CHECK_VALUE(ndim <= kMaxDims, "fill_many_: blocks with more than ", kMaxDims,
                    " dimensions after merging are not supported on CUDA, got ", ndim);
  desc.full.ndim = ndim;
  desc.full.base = shard.base();
  std::copy(shard.sizes().begin(), shard.sizes().end(), desc.full.sizes);
  std::copy(shard.strides().begin(), shard.strides().end(), desc.full.strides);
  return desc;
}

// A target as the kernels see it: the tensor itself, or (for layouts describe() doesn't take) a
// contiguous temporary, copied into the tensor after the launch by copy_temporaries.
struct PlannedTarget {
  FillDesc desc;
  at::Tensor self;
  at::Tensor temporary;
};

inline PlannedTarget plan_target(const at::Tensor& self, const ElementwiseFill& fill,
                                 const ShardIndex& shard) {
  if (const auto desc = describe(self, fill, shard)) return {*desc, self, {}};
  at::Tensor temporary = at::empty(self.sizes(), self.options());
  return {*describe(temporary, fill, shard), self, temporary};
}

inline void copy_temporaries(const std::vector<PlannedTarget>& targets) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  for (const PlannedTarget& t : targets) {
    if (t.temporary.defined()) at::Tensor(t.self).copy_(t.temporary);
  }
}

// ---- values of elements, one thread's view ------------------------------------------------------

// Each law gives element i's value (operator(), any i) and the values of the aligned span
// [first, first + kSpan) (span(), first a multiple of kSpan: the fast path of whole tensors).
// Arrays are indexed by constants only, so they stay in registers: a run-time index would put them
// in local memory (the stack).

// Element i is slot i % kPerBlock of dist's values of Philox block i / kPerBlock; the last block's
// values are kept, so consecutive elements cost one block per kPerBlock of them.
template <typename acc_t, typename Dist>
struct BlockValues {
  static_assert(kSpan % Dist::kPerBlock == 0);
  Dist dist;
  PhiloxState state;
  uint64_t block = ~uint64_t{0};
  acc_t values[Dist::kPerBlock];

  C10_HOST_DEVICE BlockValues(const Dist& d, PhiloxState k) : dist(d), state(k) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t i) {
    const uint64_t b = i / Dist::kPerBlock;
    if (b != block) {
      dist(philox4x32_10(b, state), values);
      block = b;
    }
    const auto slot = static_cast<int>(i % Dist::kPerBlock);
    acc_t v = values[0];
    TORCHINIT_UNROLL
    for (int k = 1; k < Dist::kPerBlock; ++k) v = slot == k ? values[k] : v;
    return v;
  }
  C10_HOST_DEVICE void span(uint64_t first, acc_t* out) const {
    TORCHINIT_UNROLL
    for (int64_t j = 0; j < kSpan / Dist::kPerBlock; ++j) {
      dist(philox4x32_10(first / Dist::kPerBlock + j, state), out + j * Dist::kPerBlock);
    }
  }
};

template <typename acc_t, typename Dist>
struct ElementValues : BlockValues<acc_t, Dist> {
  using BlockValues<acc_t, Dist>::BlockValues;
};

template <typename acc_t>
struct ElementValues<acc_t, Constant<acc_t>> {
  Constant<acc_t> dist;
  C10_HOST_DEVICE ElementValues(const Constant<acc_t>& d, PhiloxState) : dist(d) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t) const { return dist.value; }
  C10_HOST_DEVICE void span(uint64_t, acc_t* out) const {
    TORCHINIT_UNROLL
    for (int64_t k = 0; k < kSpan; ++k) out[k] = dist.value;
  }
};

// A rejected first proposal (NaN) is redrawn from the element's own streams.
template <typename acc_t>
struct ElementValues<acc_t, TruncNormalWide<acc_t>> {
  BlockValues<acc_t, TruncNormalWide<acc_t>> first;
  C10_HOST_DEVICE ElementValues(const TruncNormalWide<acc_t>& d, PhiloxState k) : first(d, k) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t i) {
    const acc_t v = first(i);
    return v == v ? v : first.dist.redraw(first.state, i);
  }
  C10_HOST_DEVICE void span(uint64_t begin, acc_t* out) const {
    first.span(begin, out);
    TORCHINIT_UNROLL
    for (int64_t k = 0; k < kSpan; ++k) {
      if (out[k] != out[k]) out[k] = first.dist.redraw(first.state, begin + k);
    }
  }
};

template <typename acc_t>
struct ElementValues<acc_t, TruncNormalRejection<acc_t>> {
  TruncNormalRejection<acc_t> dist;
  PhiloxState state;
  C10_HOST_DEVICE ElementValues(const TruncNormalRejection<acc_t>& d, PhiloxState k)
      : dist(d), state(k) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t i) const { return dist.sample(state, i); }
  C10_HOST_DEVICE void span(uint64_t first, acc_t* out) const {
    for (int64_t k = 0; k < kSpan; ++k) out[k] = dist.sample(state, first + k);
  }
};

template <typename T>
struct alignas(kSpan * sizeof(T)) Span {
  T v[kSpan];
};

// Values v, converted to scalar_t, as one vector store at `to`.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE void store_span(scalar_t* to, const acc_t* v) {
  Span<scalar_t> span;
  TORCHINIT_UNROLL
  for (int k = 0; k < kSpan; ++k) span.v[k] = static_cast<scalar_t>(v[k]);
  *reinterpret_cast<Span<scalar_t>*>(to) = span;
}

// Elements [begin, end) of target t, law `dist`, key `key`: this thread (lane `lane` of `lanes`)
// takes spans lane, lane + lanes, ... of kSpan elements.
template <typename scalar_t, typename Dist>
C10_HOST_DEVICE void fill_chunk_with(const FillDesc& t, const Dist& dist, PhiloxState state,
                                     int64_t begin, int64_t end, int64_t lane, int64_t lanes) {
  using acc_t = at::opmath_type<scalar_t>;
  auto* const data = static_cast<scalar_t*>(t.data);
  ElementValues<acc_t, Dist> values(dist, state);
  for (int64_t s = begin + lane * kSpan; s < end; s += lanes * kSpan) {
    // A chunk's tail, or a block whose spans aren't Philox-block-aligned spans of the full tensor.
    if (end - s < kSpan || !t.full.aligned_range()) {
      TORCHINIT_NO_UNROLL
      for (int64_t k = 0; k < kSpan && s + k < end; ++k) {
        data[t.layout.offset(s + k)] = static_cast<scalar_t>(values(t.full(s + k)));
      }
      continue;
    }
    acc_t v[kSpan];
    values.span(static_cast<uint64_t>(t.full.base + s), v);
    if (t.vector_stores) {
      store_span(data + s, v);
    } else {
      TORCHINIT_UNROLL
      for (int64_t k = 0; k < kSpan; ++k)
        data[t.layout.offset(s + k)] = static_cast<scalar_t>(v[k]);
    }
  }
}

// fill_chunk_with the law of t.fill (chosen per chunk: fill_many_'s targets differ).
template <typename scalar_t>
C10_HOST_DEVICE void fill_chunk(const FillDesc& t, PhiloxState state, int64_t begin, int64_t end,
                                int64_t lane, int64_t lanes) {
  visit_law<at::opmath_type<scalar_t>>(t.fill, [&](const auto& dist) {
    fill_chunk_with<scalar_t>(t, dist, state, begin, end, lane, lanes);
  });
}

// fill_chunk for the target's dtype.
C10_HOST_DEVICE inline void fill_chunk_any(const FillDesc& t, PhiloxState state, int64_t begin,
                                           int64_t end, int64_t lane, int64_t lanes) {
  switch (t.dtype) {
    case c10::ScalarType::Float:
      return fill_chunk<float>(t, state, begin, end, lane, lanes);
    case c10::ScalarType::Double:
      return fill_chunk<double>(t, state, begin, end, lane, lanes);
    case c10::ScalarType::Half:
      return fill_chunk<c10::Half>(t, state, begin, end, lane, lanes);
    case c10::ScalarType::BFloat16:
      return fill_chunk<c10::BFloat16>(t, state, begin, end, lane, lanes);
    default:
      return;  // plan_fill_many admits no other dtype
  }
}

// Chunk c of a target: elements [c kChunk, min(numel, (c + 1) kChunk)).
C10_HOST_DEVICE inline int64_t chunk_end(const FillDesc& t, int64_t c) {
  return (c + 1) * kChunk < t.numel ? (c + 1) * kChunk : t.numel;
}

inline int64_t num_chunks(int64_t numel) {
  return (numel + kChunk - 1) / kChunk;
}

// ---- whole contiguous tensors ------------------------------------------------------------------

// Whether fill_contiguous takes the single fill of t: a whole tensor, contiguous, aligned for span
// stores, and under 2^31 elements, so that element and span indices fit 32 bits.
inline bool takes_contiguous(const FillDesc& t) {
  return t.vector_stores && t.full.ndim == 0 && t.full.base == 0 && t.numel <= INT32_MAX;
}

// The single fill of a target that takes_contiguous: fill_chunk_with's aligned spans without its
// checks, spans thread, thread + threads, ... (a warp's stores coalesced), then element `thread` of
// the tail after the last whole span.
template <typename scalar_t, typename Dist>
C10_HOST_DEVICE void fill_contiguous(scalar_t* data, int32_t numel, const Dist& dist,
                                     PhiloxState state, int32_t thread, int32_t threads) {
  using acc_t = at::opmath_type<scalar_t>;
  ElementValues<acc_t, Dist> values(dist, state);
  const int32_t spans = numel / kSpan;
  for (int32_t s = thread; s < spans; s += threads) {
    acc_t v[kSpan];
    // Widened from 32 unsigned bits: Philox's high counter word is then known to be 0.
    values.span(static_cast<uint64_t>(static_cast<uint32_t>(s)) * kSpan, v);
    store_span(data + static_cast<int64_t>(s) * kSpan, v);
  }
  if (thread < numel - spans * kSpan) {
    const int32_t i = spans * kSpan + thread;
    data[i] = static_cast<scalar_t>(values(static_cast<uint32_t>(i)));
  }
}

}  // namespace torchinit::cuda
