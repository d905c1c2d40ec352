// The GPU's elementwise fills (fill_many_ and the single uniform_/normal_/trunc_normal_) as
// host-device code: what one thread computes and stores. The kernels in random.cu only hand out
// chunks or spans; tests run this same code on the host against the CPU kernels
// (test_cuda_logic.py).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include "../math/unroll.h"
#include "../plan/elementwise_fill.h"
#include "../plan/shard_index.h"
#include "strided_layout.h"
#include "threads.h"

namespace torchinit::cuda {

// Elements per thread step: one Philox block of float values, stored as one vector.
constexpr int kSpan = 4;
// Elements per chunk, the unit a thread block takes (a multiple of kSpan, so spans are aligned to
// Philox blocks).
constexpr int64_t kChunk = 8192;

// A target's logical index -> index in the logical tensor whose values it takes (ShardIndex, its
// dimensions merged: none for a whole tensor or a shard of whole rows).
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

// Where one target of a GPU fill lies and how its elements are numbered, as plain data (its law
// travels beside it, as the sampler the kernel is specialized for).
struct FillDesc {
  void* data;
  bool vector_stores;  // contiguous, and aligned for kSpan-element stores
  int64_t numel;
  StridedLayout layout;
  FullIndex full;
};

// The target's description; nullopt when its layout needs a contiguous temporary (then describe
// the temporary). Throws, before anything is written, for shards of tensors over kMaxDims dims.
inline std::optional<FillDesc> describe(const at::Tensor& self, const ShardIndex& shard) {
  const std::optional<StridedLayout> layout = strided_layout(self);
  if (!layout) return std::nullopt;
  FillDesc desc{};
  desc.data = self.data_ptr();
  desc.numel = self.numel();
  desc.vector_stores = layout->ndim == 0 &&
                       reinterpret_cast<uintptr_t>(desc.data) % (kSpan * self.element_size()) == 0;
  desc.layout = *layout;
  const auto ndim = static_cast<int32_t>(shard.sizes().size());
  TORCH_CHECK_VALUE(ndim <= kMaxDims, "fill_many_: shards with more than ", kMaxDims,
                    " dimensions after merging are not supported on CUDA, got ", ndim);
  desc.full.ndim = ndim;
  desc.full.base = shard.base();
  std::copy(shard.sizes().begin(), shard.sizes().end(), desc.full.sizes);
  std::copy(shard.strides().begin(), shard.strides().end(), desc.full.strides);
  return desc;
}

// A target as the kernels see it: the tensor itself, or (for layouts describe() doesn't take) a
// contiguous temporary, copied into the tensor after the launch by copy_temporaries.
struct LaunchTarget {
  FillDesc desc;
  ElementwiseFill fill;
  at::Tensor self;
  at::Tensor temporary;
};

inline LaunchTarget launch_target(const at::Tensor& self, const ElementwiseFill& fill,
                                  const ShardIndex& shard) {
  if (const auto desc = describe(self, shard)) return {*desc, fill, self, {}};
  at::Tensor temporary = at::empty(self.sizes(), self.options());
  return {*describe(temporary, shard), fill, self, temporary};
}

inline void copy_temporaries(const std::vector<LaunchTarget>& targets) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  for (const LaunchTarget& t : targets) {
    if (t.temporary.defined()) at::Tensor(t.self).copy_(t.temporary);
  }
}

// ---- values of elements, one thread's view ------------------------------------------------------

// Each law gives element i's value (operator(), any i) and the values of the aligned span
// [first, first + kSpan) (span(), first a multiple of kSpan: the fast path of whole tensors).
// Arrays are indexed by constants only (pick, for a run-time slot), so they stay in registers.

// A Philox state the compiler must take as new at every block drawn (an empty asm), so that the
// block's round keys are added there, not all twenty hoisted out of the loops and held in
// registers: in QueuedWideChunk's per-element path and drains, and BatchRejectionValues', which
// spilled with them.
struct OpaquePhiloxState : PhiloxState {};

C10_HOST_DEVICE inline PhiloxBlock philox4x32_10(uint64_t block, OpaquePhiloxState k) {
#ifdef __CUDA_ARCH__
  asm volatile("" : "+l"(k.key));
#endif
  return philox4x32_10(block, static_cast<const PhiloxState&>(k));
}

// The round keys of a state, computed once and held in registers through a loop: hidden from the
// compiler (an empty asm), which would otherwise add them again for every Philox block. (A batch's
// state is read at a run-time index, so its keys can't be operands from the kernel's parameters,
// as fill_one_kernel's are.)
C10_HOST_DEVICE inline PhiloxRoundKeys held_round_keys(const PhiloxState& state) {
  PhiloxRoundKeys keys = round_keys(state);
#ifdef __CUDA_ARCH__
  TORCHINIT_UNROLL
  for (int r = 0; r < 10; ++r) asm volatile("" : "+r"(keys.k0[r]), "+r"(keys.k1[r]));
#endif
  return keys;
}

// The laws whose span draws all its Philox blocks before it transforms any: float64's normal_,
// two blocks a span, whose round keys ptxas computed once and held through the first block's
// Box-Muller (fill_many_kernel spilled them: a 16-byte stack). Drawn first, the keys are dead
// before the transforms, and only the second block's words are held. For the truncated normal's
// inversion, also two blocks a span, it costs registers or instructions.
template <typename Dist>
constexpr bool kBlocksFirst = false;
template <>
constexpr bool kBlocksFirst<Normal<double>> = true;

// Element i is slot i % kPerBlock of dist's values of Philox block i / kPerBlock; the last block's
// values are kept, so consecutive elements cost one block per kPerBlock of them. The law and state
// are held as DistHeld and StateHeld (copies, or references into fill_many_kernel's batch), and a
// single element's block is drawn with the state as ElementState.
template <typename acc_t, typename Dist, typename State, typename DistHeld = Dist,
          typename StateHeld = State, typename ElementState = State>
struct BlockValues {
  static_assert(kSpan % Dist::kPerBlock == 0);
  DistHeld dist;
  StateHeld state;
  uint64_t block = ~uint64_t{0};
  acc_t values[Dist::kPerBlock];

  C10_HOST_DEVICE BlockValues(const Dist& d, const State& k) : dist(d), state(k) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t i) {
    const uint64_t b = i / Dist::kPerBlock;
    if (b != block) {
      dist(philox4x32_10(b, ElementState{state}), values);
      block = b;
    }
    return pick(values, static_cast<int>(i % Dist::kPerBlock));
  }
  C10_HOST_DEVICE void span(uint64_t first, acc_t* out) const {
    constexpr int kBlocks = kSpan / Dist::kPerBlock;
    if constexpr (kBlocksFirst<Dist>) {
      PhiloxBlock blocks[kBlocks];
      TORCHINIT_UNROLL
      for (int j = 0; j < kBlocks; ++j)
        blocks[j] = philox4x32_10(first / Dist::kPerBlock + j, state);
      TORCHINIT_UNROLL
      for (int j = 0; j < kBlocks; ++j) dist(blocks[j], out + j * Dist::kPerBlock);
    } else {
      TORCHINIT_UNROLL
      for (int j = 0; j < kBlocks; ++j)
        dist(philox4x32_10(first / Dist::kPerBlock + j, state), out + j * Dist::kPerBlock);
    }
  }
};

// BlockValues of a law and state read where used from fill_many_kernel's batch (its parameters)
// rather than copied into registers, the single elements' blocks drawn with OpaquePhiloxState.
template <typename acc_t, typename Dist>
using BatchBlockValues =
    BlockValues<acc_t, Dist, PhiloxState, const Dist&, const PhiloxState&, OpaquePhiloxState>;

template <typename acc_t, typename Dist, typename State>
struct ElementValues : BlockValues<acc_t, Dist, State> {
  using BlockValues<acc_t, Dist, State>::BlockValues;
};

template <typename acc_t, typename State>
struct ElementValues<acc_t, Constant<acc_t>, State> {
  Constant<acc_t> dist;
  C10_HOST_DEVICE ElementValues(const Constant<acc_t>& d, const State&) : dist(d) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t) const { return dist.value; }
  C10_HOST_DEVICE void span(uint64_t, acc_t* out) const {
    TORCHINIT_UNROLL
    for (int64_t k = 0; k < kSpan; ++k) out[k] = dist.value;
  }
};

// A rejected first proposal (NaN) is redrawn from the element's own streams.
template <typename acc_t, typename State>
struct ElementValues<acc_t, TruncNormalWide<acc_t>, State> {
  BlockValues<acc_t, TruncNormalWide<acc_t>, State> first;
  C10_HOST_DEVICE ElementValues(const TruncNormalWide<acc_t>& d, const State& k) : first(d, k) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t i) {
    const acc_t v = first(i);
    return v == v ? v : first.dist.redraw(first.state, i);
  }
  // The span's acceptance tested once, not each value for NaN.
  C10_HOST_DEVICE void span(uint64_t begin, acc_t* out) const {
    static_assert(TruncNormalWide<acc_t>::kPerBlock == kSpan, "a span is a Philox block");
    bool rejected[kSpan];
    first.dist.clamped_proposals(philox4x32_10(begin / kSpan, first.state), out, rejected);
    if (rejected[0] | rejected[1] | rejected[2] | rejected[3]) {
      TORCHINIT_UNROLL
      for (int64_t k = 0; k < kSpan; ++k) {
        if (rejected[k]) out[k] = first.dist.redraw(first.state, begin + k);
      }
    }
  }
};

// out[k] = sample(first + k) for the kSpan elements of a span. Where nvcc keeps this a loop
// rather than four copies of the sampler (as in fill_one_kernel), out[k] at the trip's run-time k
// would put the span in a stack (16 bytes for float, 32 for double); instead each value is shifted
// in at out[0], last element first, so that `out` is indexed by constants only and stays in
// registers.
template <typename acc_t, typename Sample>
C10_HOST_DEVICE void sample_span(uint64_t first, acc_t* out, const Sample& sample) {
  for (int64_t k = kSpan - 1; k >= 0; --k) {
    const acc_t v = sample(first + k);
    TORCHINIT_UNROLL
    for (int j = kSpan - 1; j > 0; --j) out[j] = out[j - 1];
    out[0] = v;
  }
}

template <typename acc_t, typename State>
struct ElementValues<acc_t, TruncNormalRejection<acc_t>, State> {
  TruncNormalRejection<acc_t> dist;
  State state;
  C10_HOST_DEVICE ElementValues(const TruncNormalRejection<acc_t>& d, const State& k)
      : dist(d), state(k) {}
  C10_HOST_DEVICE acc_t operator()(uint64_t i) const { return dist.sample(state, i); }
  C10_HOST_DEVICE void span(uint64_t first, acc_t* out) const { sample_span(first, out, *this); }
};

template <typename T>
struct alignas(kSpan * sizeof(T)) Span {
  T v[kSpan];
};

// Values v, converted to scalar_t, as one vector store at `to`. kWords: on the GPU, as vector
// words through the store intrinsic, for code where the compiler splits the struct's store into
// scalar stores and does not merge them back (fill_many_kernel, whose target pointer comes from
// the batch at a run-time index).
template <typename scalar_t, bool kWords = false, typename acc_t>
C10_HOST_DEVICE void store_span(scalar_t* to, const acc_t* v) {
  Span<scalar_t> span;
  TORCHINIT_UNROLL
  for (int k = 0; k < kSpan; ++k) span.v[k] = static_cast<scalar_t>(v[k]);
#ifdef __CUDA_ARCH__
  if constexpr (kWords) {
    using Word = std::conditional_t<sizeof(span) % sizeof(uint4) == 0, uint4, uint2>;
    Word words[sizeof(span) / sizeof(Word)];
    memcpy(words, &span, sizeof(span));
    TORCHINIT_UNROLL
    for (size_t k = 0; k < sizeof(span) / sizeof(Word); ++k)
      __stwb(reinterpret_cast<Word*>(to) + k, words[k]);
    return;
  }
#endif
  *reinterpret_cast<Span<scalar_t>*>(to) = span;
}

// Elements [begin, end) of target t, their values from `values`: this thread (lane `lane` of
// `lanes`) takes spans lane, lane + lanes, ... of kSpan elements, and calls seen(i, v) with each
// element i's value v once stored.
template <typename scalar_t, bool kWords, typename Values, typename Seen>
C10_HOST_DEVICE void fill_spans(const FillDesc& t, Values& values, int64_t begin, int64_t end,
                                int64_t lane, int64_t lanes, const Seen& seen) {
  using acc_t = at::opmath_type<scalar_t>;
  auto* const data = static_cast<scalar_t*>(t.data);
  for (int64_t s = begin + lane * kSpan; s < end; s += lanes * kSpan) {
    // A chunk's tail, or a shard whose spans aren't Philox-block-aligned spans of the full tensor.
    if (end - s < kSpan || !t.full.aligned_range()) {
      TORCHINIT_NO_UNROLL
      for (int64_t k = 0; k < kSpan && s + k < end; ++k) {
        const acc_t v = values(t.full(s + k));
        data[t.layout.offset(s + k)] = static_cast<scalar_t>(v);
        seen(s + k, v);
      }
      continue;
    }
    acc_t v[kSpan];
    values.span(static_cast<uint64_t>(t.full.base + s), v);
    if (t.vector_stores) {
      store_span<scalar_t, kWords>(data + s, v);
    } else {
      TORCHINIT_UNROLL
      for (int64_t k = 0; k < kSpan; ++k)
        data[t.layout.offset(s + k)] = static_cast<scalar_t>(v[k]);
    }
    TORCHINIT_UNROLL
    for (int64_t k = 0; k < kSpan; ++k) seen(s + k, v[k]);
  }
}

// Elements [begin, end) of target t, law `dist`, Philox state `state`: this thread (lane `lane` of
// `lanes`) takes spans lane, lane + lanes, ... of kSpan elements.
template <typename scalar_t, bool kWords = false, typename Dist, typename State>
C10_HOST_DEVICE void fill_chunk_with(const FillDesc& t, const Dist& dist, State state,
                                     int64_t begin, int64_t end, int64_t lane, int64_t lanes) {
  using acc_t = at::opmath_type<scalar_t>;
  ElementValues<acc_t, Dist, State> values(dist, state);
  fill_spans<scalar_t, kWords>(t, values, begin, end, lane, lanes, [](int64_t, acc_t) {});
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

// The laws whose fill_one_kernel reads their round keys from its parameters (unless the key is
// read at run time, in a captured graph): those where ptxas would otherwise add them again for
// every Philox block. For the others a second copy of the loop costs registers or a stack and
// saves nothing (docs/cuda.md, "Kernels").
template <typename Dist>
constexpr bool kRoundKeysInParameters = false;
template <>
constexpr bool kRoundKeysInParameters<Normal<float>> = true;
template <>
constexpr bool kRoundKeysInParameters<TruncNormal<float, float>> = true;
template <>
constexpr bool kRoundKeysInParameters<TruncNormalWide<float>> = true;

// The single fill of a target that takes_contiguous: fill_chunk_with's aligned spans without its
// checks, spans thread, thread + threads, ... (a warp's stores coalesced), then element `thread` of
// the tail after the last whole span. (The wide trunc_normal_ regime's: QueuedWideFill, below.)
template <typename scalar_t, typename Dist, typename State>
C10_HOST_DEVICE void fill_contiguous(scalar_t* data, int32_t numel, const Dist& dist,
                                     const State& state, int32_t thread, int32_t threads) {
  using acc_t = at::opmath_type<scalar_t>;
  ElementValues<acc_t, Dist, State> values(dist, state);
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

// ---- trunc_normal_'s wide regime: rejections queued, redrawn by full warps ---------------------

// A rejected first proposal (4.55% of them on the default interval [-2, 2]) is redrawn: a Philox
// block or more, and the double inversion's code. Redrawn in its lane's span, it would make a
// warp run a divergent redraw pass for every slot that any of its 32 lanes rejects (probability
// 0.78 a slot there). Instead fill_one_kernel's and fill_many_kernel's threads store the first
// proposals, a NaN placeholder where rejected, and queue the rejected indices in their thread
// block's shared memory; after every kRoundsPerDrain rounds (a span a thread a round) the block's
// threads redraw the queue together, entry e by thread e % kThreads, so only a drain's last warp
// has idle lanes.
constexpr int32_t kRoundsPerDrain = 2;

// The round after which a thread block drains, of a queued fill's `rounds` rounds, the rounds from
// r on: after every kRoundsPerDrain of them and after the last.
C10_HOST_DEVICE inline int32_t next_drain(int32_t r, int32_t rounds) {
  return r + kRoundsPerDrain < rounds ? r + kRoundsPerDrain : rounds;
}

// The mask of a span's flags (bit k: flag[k]).
C10_HOST_DEVICE inline uint32_t span_mask(const bool* flag) {
  uint32_t m = 0;
  TORCHINIT_UNROLL
  for (int k = 0; k < kSpan; ++k) m |= uint32_t{flag[k]} << k;
  return m;
}

// A thread block's rejected element indices, a ring with room for every element of
// kRoundsPerDrain rounds. Both counts only grow: the entries still to redraw are those pushed
// since the last drain, [drained, pushed) modulo the ring. As nothing resets `pushed`, the
// barrier that ends a drain is all that separates the drain's reads from the next rounds' pushes;
// after it, thread 0 moves `drained` on to the count that drain read.
struct RedrawQueue {
  static constexpr uint32_t kEntries = kRoundsPerDrain * kSpan * kThreads;
  static_assert((kEntries & (kEntries - 1)) == 0,
                "a power of 2, so positions wrap as the counts do");
  uint32_t pushed, drained;
  uint32_t index[kEntries];

  // Pushes elements first + k for the bits k of `rejected` (a span's, or 1 for one element), in
  // that order: one atomic for the span, not one per element.
  C10_HOST_DEVICE void push(uint32_t first, uint32_t rejected) {
    uint32_t count = 0;
    TORCHINIT_UNROLL
    for (int k = 0; k < kSpan; ++k) count += rejected >> k & 1;
#ifdef __CUDA_ARCH__
    uint32_t at = atomicAdd(&pushed, count);
#else
    uint32_t at = pushed;
    pushed += count;
#endif
    TORCHINIT_UNROLL
    for (int k = 0; k < kSpan; ++k) {
      if (rejected >> k & 1) index[at++ % kEntries] = first + k;
    }
  }
  // Thread `lane`'s share of a drain: redraw(i) for the entries i still to redraw, lane,
  // lane + kThreads, ... of them. Returns the count of pushes drained up to, for mark_drained.
  template <typename Redraw>
  C10_HOST_DEVICE uint32_t drain(int32_t lane, const Redraw& redraw) const {
    const uint32_t up_to = pushed;
    for (uint32_t e = drained + lane; e < up_to; e += kThreads) redraw(index[e % kEntries]);
    return up_to;
  }
  // Thread 0's, after the barrier that ends a drain up to `drained_up_to` (drain's result: the
  // next rounds may be pushing by then).
  C10_HOST_DEVICE void mark_drained(uint32_t drained_up_to) { drained = drained_up_to; }
};

// The laws whose fills queue their redraws: the wide regime, the only one where a few elements
// are redrawn (the rejection regimes sample every element by rejection).
template <typename Dist>
constexpr bool kQueuesRedraws = false;
template <typename T>
constexpr bool kQueuesRedraws<TruncNormalWide<T>> = true;

// A queued fill (QueuedWideFill, QueuedWideChunk) is run in pieces a thread block runs in this
// order: every thread's rounds [r, next_drain(r, rounds())) (run), a barrier, every thread's share
// of the drain, a barrier, and again from there. rounds() is the same for every thread of the
// block, so all of them meet at each barrier.

// The rounds of a queued fill whose span is whole for thread `thread` of `threads`, which takes
// spans thread, thread + threads, ... of `spans` whole ones.
C10_HOST_DEVICE inline int32_t whole_span_rounds(int32_t spans, int32_t thread, int32_t threads) {
  return thread < spans ? (spans - thread + threads - 1) / threads : 0;
}

// A queued fill's whole aligned span: the first proposals of Philox block `block` stored at `to`
// (clamped, the rejected ones too: placeholders the drain overwrites), and the rejected ones
// queued as entries `entry` + k. Tested once for the span, not value by value for NaN.
template <typename scalar_t, bool kWords, typename acc_t, typename State>
C10_HOST_DEVICE void queue_span(scalar_t* to, const TruncNormalWide<acc_t>& dist,
                                const State& state, uint64_t block, uint32_t entry,
                                RedrawQueue& queue) {
  static_assert(TruncNormalWide<acc_t>::kPerBlock == kSpan, "a span is a Philox block");
  acc_t v[kSpan];
  bool rejected[kSpan];
  dist.clamped_proposals(philox4x32_10(block, state), v, rejected);
  store_span<scalar_t, kWords>(to, v);
  // (The flags OR'd as predicates: a test of span_mask costs sm_90 1.25 instructions an element.)
  if (rejected[0] | rejected[1] | rejected[2] | rejected[3]) queue.push(entry, span_mask(rejected));
}

// fill_contiguous for the wide regime. A thread's round r fills span `thread` + r `threads` (the
// last partial where numel % kSpan).
template <typename scalar_t, typename State>
struct QueuedWideFill {
  using acc_t = at::opmath_type<scalar_t>;
  scalar_t* data;
  int32_t numel;
  BlockValues<acc_t, TruncNormalWide<acc_t>, State> first;  // the tail's, NaN where rejected
  int32_t thread, threads;
  int32_t whole_rounds;  // this thread's rounds whose span is whole

  C10_HOST_DEVICE QueuedWideFill(scalar_t* d, int32_t n, const TruncNormalWide<acc_t>& dist,
                                 const State& state, int32_t t, int32_t ts)
      : data(d),
        numel(n),
        first(dist, state),
        thread(t),
        threads(ts),
        whole_rounds(whole_span_rounds(n / kSpan, t, ts)) {}

  C10_HOST_DEVICE int32_t rounds() const {
    const int32_t spans = numel / kSpan + (numel % kSpan != 0);
    return (spans + threads - 1) / threads;
  }
  // This thread's rounds [r, end): each span's first proposals stored, the rejected ones queued.
  // The whole spans' loop holds no other test.
  C10_HOST_DEVICE void run(int32_t r, int32_t end, RedrawQueue& queue) {
    for (const int32_t whole_end = end < whole_rounds ? end : whole_rounds; r < whole_end; ++r) {
      // Widened from 32 unsigned bits: Philox's high counter word is then known to be 0.
      const auto s = static_cast<uint32_t>(thread + r * threads);
      queue_span<scalar_t, false>(data + static_cast<int64_t>(s) * kSpan, first.dist, first.state,
                                  s, s * kSpan, queue);
    }
    if (r < end && thread + r * threads == numel / kSpan) {
      TORCHINIT_NO_UNROLL
      for (int32_t i = numel / kSpan * kSpan; i < numel; ++i) {
        const acc_t v = first(static_cast<uint32_t>(i));
        data[i] = static_cast<scalar_t>(v);
        if (v != v) queue.push(i, 1);
      }
    }
  }
  // Thread `lane`'s share of the drain: redraws written over their placeholders.
  C10_HOST_DEVICE uint32_t drain(const RedrawQueue& queue, int32_t lane) const {
    return queue.drain(lane, [&](uint32_t i) {
      data[i] = static_cast<scalar_t>(first.dist.redraw(first.state, i));
    });
  }
};

// ---- transposed matrices ------------------------------------------------------------------------

// A whole tensor whose layout is two dimensions (rows, cols) with strides (1, ld), ld >= rows: a
// transposed matrix (w.t()) or a column range of one. A thread's span of consecutive logical
// elements would be 4 stores ld elements apart, each on a memory sector of its own. Instead a
// thread block takes a tile of kTile x kTile elements: its values computed along rows (whole
// Philox blocks where the row allows), held in shared memory, stored along columns, 4
// consecutive elements of memory a thread.
constexpr int kTile = 32;
constexpr int kTileThreads = kTile * kTile / kSpan;

struct TransposedTiles {
  void* data;
  int64_t rows, cols, ld;
  bool vector_stores;  // every column starts aligned for kSpan-element stores

  C10_HOST_DEVICE int64_t tiles_per_row() const { return (cols + kTile - 1) / kTile; }
  C10_HOST_DEVICE int64_t tiles() const { return (rows + kTile - 1) / kTile * tiles_per_row(); }
  // Tile b's first row and column.
  C10_HOST_DEVICE int64_t first_row(int64_t b) const { return b / tiles_per_row() * kTile; }
  C10_HOST_DEVICE int64_t first_col(int64_t b) const { return b % tiles_per_row() * kTile; }
};

inline std::optional<TransposedTiles> transposed_tiles(const FillDesc& t, size_t element_size) {
  const StridedLayout& l = t.layout;
  if (t.full.ndim != 0 || t.full.base != 0 || l.ndim != 2 || l.strides[0] != 1 ||
      l.strides[1] < l.sizes[0])
    return std::nullopt;
  const bool aligned = reinterpret_cast<uintptr_t>(t.data) % (kSpan * element_size) == 0;
  return TransposedTiles{t.data, l.sizes[0], l.sizes[1], l.strides[1],
                         aligned && l.strides[1] % kSpan == 0};
}

// A tile's values as acc_t, padded by one column so that the threads of a warp reading down a
// column, or along a row, hit distinct shared-memory banks.
template <typename acc_t>
using Tile = acc_t[kTile][kTile + 1];

// Tile b's values, thread `thread` of kTileThreads: row thread / 8, elements 4 (thread % 8) ...
template <typename acc_t, typename Dist, typename State>
C10_HOST_DEVICE void tile_values(const TransposedTiles& t, const Dist& dist, const State& state,
                                 int64_t b, int thread, Tile<acc_t>& tile) {
  const int r = thread / (kTile / kSpan);
  const int c = thread % (kTile / kSpan) * kSpan;
  const int64_t i = t.first_row(b) + r;
  const int64_t j = t.first_col(b) + c;
  if (i >= t.rows) return;
  ElementValues<acc_t, Dist, State> values(dist, state);
  const int64_t first = i * t.cols + j;
  if (j + kSpan <= t.cols && first % kSpan == 0) {
    acc_t v[kSpan];
    values.span(static_cast<uint64_t>(first), v);
    TORCHINIT_UNROLL
    for (int k = 0; k < kSpan; ++k) tile[r][c + k] = v[k];
    return;
  }
  TORCHINIT_NO_UNROLL
  for (int k = 0; k < kSpan && j + k < t.cols; ++k)
    tile[r][c + k] = values(static_cast<uint64_t>(first + k));
}

// Tile b's stores, thread `thread`: column thread / 8, rows 4 (thread % 8) ..., one vector store
// where the column allows.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE void tile_stores(const TransposedTiles& t, int64_t b, int thread,
                                 const Tile<acc_t>& tile) {
  const int c = thread / (kTile / kSpan);
  const int r = thread % (kTile / kSpan) * kSpan;
  const int64_t i = t.first_row(b) + r;
  const int64_t j = t.first_col(b) + c;
  if (j >= t.cols) return;
  scalar_t* const to = static_cast<scalar_t*>(t.data) + j * t.ld + i;
  if (t.vector_stores && i + kSpan <= t.rows) {
    acc_t v[kSpan];
    TORCHINIT_UNROLL
    for (int k = 0; k < kSpan; ++k) v[k] = tile[r + k][c];
    return store_span<scalar_t, true>(to, v);
  }
  TORCHINIT_NO_UNROLL
  for (int k = 0; k < kSpan && i + k < t.rows; ++k) to[k] = static_cast<scalar_t>(tile[r + k][c]);
}

// ---- fill_many_: batches of one (dtype, law) ---------------------------------------------------

// The kernel parameter space of every CUDA version and GPU.
constexpr size_t kParamBytes = 4096;

// Up to kTargets targets of one law, passed to the kernel by value: nothing is copied to the GPU
// before the launch, so a CUDA graph can capture it. The chunk map is built on the host: target t
// takes the batch's chunks [first_chunk[t], first_chunk[t + 1]), none empty.
template <typename Dist>
struct FillBatch {
  static constexpr int kTargets =
      static_cast<int>((kParamBytes - 2 * sizeof(int64_t)) /
                       (sizeof(FillDesc) + sizeof(Dist) + sizeof(PhiloxState) + sizeof(int64_t)));
  int32_t count;
  int64_t first_chunk[kTargets + 1];
  FillDesc targets[kTargets];
  Dist dists[kTargets];
  PhiloxState states[kTargets];

  C10_HOST_DEVICE int64_t chunks() const { return first_chunk[count]; }
};

// fill_chunk_with for a target that is contiguous, aligned for span stores and takes the aligned
// spans base, base + kSpan, ...: checked once for the chunk, not once a span. The lane whose span
// reaches past `end` fills the chunk's last elements one at a time. As in fill_contiguous, the
// loop takes the round keys as operands (held_round_keys), 32-bit chunk-local indices (a chunk has
// kChunk elements) and a store pointer that walks: the keys added again for every Philox block and
// 64-bit indices and addresses made normal_'s loop 207 instructions a span, fill_one_kernel's 173.
template <typename scalar_t, typename Dist>
C10_HOST_DEVICE void fill_aligned_chunk(scalar_t* data, int64_t base, const Dist& dist,
                                        PhiloxState state, int64_t begin, int64_t end, int32_t lane,
                                        int32_t lanes) {
  using acc_t = at::opmath_type<scalar_t>;
  ElementValues<acc_t, Dist, PhiloxRoundKeys> values(dist, held_round_keys(state));
  scalar_t* const chunk = data + begin;
  const auto first = static_cast<uint64_t>(base + begin);
  // Unsigned, so that the spans' end is count with its low bits cleared, no sign to correct for.
  const auto count = static_cast<uint32_t>(end - begin);
  const auto spans_end = static_cast<int32_t>(count / kSpan * kSpan);
  int32_t s = lane * kSpan;
  scalar_t* to = chunk + s;
  // Not unrolled: with fill_many_kernel's constant stride, nvcc unrolls constant_'s loop, 40 -> 62
  // registers.
  TORCHINIT_NO_UNROLL
  for (; s < spans_end; s += lanes * kSpan, to += lanes * kSpan) {
    acc_t v[kSpan];
    values.span(first + static_cast<uint32_t>(s), v);
    store_span<scalar_t, true>(to, v);
  }
  TORCHINIT_NO_UNROLL
  for (; s < static_cast<int32_t>(count); ++s)
    chunk[s] = static_cast<scalar_t>(values(first + static_cast<uint32_t>(s)));
}

// The laws whose fill_many_kernel takes fill_aligned_chunk where it can: those whose spans are
// cheap, so fill_chunk_with's checks a span would be a large part of the work. For the others, a
// second copy of the sampler's code costs more registers (a stack, for float64) than it saves.
template <typename Dist>
constexpr bool kAlignedChunks = false;
template <typename T>
constexpr bool kAlignedChunks<Constant<T>> = true;
template <>
constexpr bool kAlignedChunks<Uniform<float>> = true;
template <>
constexpr bool kAlignedChunks<Normal<float>> = true;

// ElementValues of the rejection regimes for fill_many_kernel: the sampler and state read where
// used from the batch (the kernel's parameters), and drawn with OpaquePhiloxState. Held in
// registers through the chunk (7 doubles and the state), with all twenty round keys, the sampler
// took 92 to 98 registers, and spilled under 64.
template <typename Dist>
struct BatchRejectionValues {
  const Dist& dist;
  const PhiloxState& state;

  C10_HOST_DEVICE auto operator()(uint64_t i) const {
    return dist.sample(OpaquePhiloxState{state}, i);
  }
  template <typename acc_t>
  C10_HOST_DEVICE void span(uint64_t first, acc_t* out) const {
    sample_span(first, out, *this);
  }
};

// The laws whose fill_many_kernel reads law and state from the batch where used (BatchValues)
// outside fill_aligned_chunk: the rejection regimes, and float64's laws, whose copies held in
// registers through a chunk left the double sampler too few (normal_ spilled, trunc_normal_'s
// inverse had a 40-byte stack), and the float dtypes' inverse in double, which spilled the
// target's data pointer (an 8-byte stack): its loop loads the law's doubles where used instead, 1%
// more instructions.
template <typename Dist>
constexpr bool kValuesFromBatch = false;
template <typename T>
constexpr bool kValuesFromBatch<TruncNormalRejection<T>> = true;
template <typename T>
constexpr bool kValuesFromBatch<TruncNormal<T, double>> = true;
template <>
constexpr bool kValuesFromBatch<Normal<double>> = true;
template <>
constexpr bool kValuesFromBatch<Uniform<double>> = true;

// Those laws' values, read from the batch.
template <typename acc_t, typename Dist>
using BatchValues = std::conditional_t<std::is_same_v<Dist, TruncNormalRejection<acc_t>>,
                                       BatchRejectionValues<Dist>, BatchBlockValues<acc_t, Dist>>;

// The target of the batch's chunk c: the last whose first chunk is <= c.
template <typename Dist>
C10_HOST_DEVICE int32_t chunk_target(const FillBatch<Dist>& batch, int64_t c) {
  int32_t t = 0;
  for (int32_t hi = batch.count; hi - t > 1;) {
    const int32_t mid = (t + hi) / 2;
    (batch.first_chunk[mid] <= c ? t : hi) = mid;
  }
  return t;
}

// Chunk c of the batch, lane `lane` of `lanes`.
template <typename scalar_t, typename Dist>
C10_HOST_DEVICE void fill_batch_chunk(const FillBatch<Dist>& batch, int64_t c, int32_t lane,
                                      int32_t lanes) {
  const int32_t t = chunk_target(batch, c);
  const FillDesc& target = batch.targets[t];
  const int64_t local = c - batch.first_chunk[t];
  if constexpr (kAlignedChunks<Dist>) {
    if (target.vector_stores && target.full.aligned_range()) {
      return fill_aligned_chunk(static_cast<scalar_t*>(target.data), target.full.base,
                                batch.dists[t], batch.states[t], local * kChunk,
                                chunk_end(target, local), lane, lanes);
    }
  }
  if constexpr (kValuesFromBatch<Dist>) {
    BatchValues<at::opmath_type<scalar_t>, Dist> values{batch.dists[t], batch.states[t]};
    return fill_spans<scalar_t, true>(target, values, local * kChunk, chunk_end(target, local),
                                      lane, lanes, [](int64_t, auto) {});
  }
  fill_chunk_with<scalar_t, true>(target, batch.dists[t], batch.states[t], local * kChunk,
                                  chunk_end(target, local), lane, lanes);
}

// fill_batch_chunk for the wide regime: chunk c of the batch by the kThreads threads of a block,
// thread `thread`'s part. A thread's round r fills span `thread` + r kThreads of the chunk, in
// any layout. Entries are chunk-local indices (below kChunk); a drain maps them back to the
// element's full index and memory offset. The target, law and state are read from the batch at
// the chunk's target index t.
template <typename scalar_t, typename Dist>
struct QueuedWideChunk {
  static_assert(std::is_same_v<Dist, TruncNormalWide<at::opmath_type<scalar_t>>>);
  using acc_t = at::opmath_type<scalar_t>;
  const FillBatch<Dist>& batch;
  int32_t t;       // the chunk's target
  int64_t begin;   // its first element
  int32_t count;   // its elements
  int32_t thread;  // this thread's index in its block

  C10_HOST_DEVICE QueuedWideChunk(const FillBatch<Dist>& b, int64_t c, int32_t th)
      : batch(b), t(chunk_target(b, c)), thread(th) {
    const int64_t local = c - batch.first_chunk[t];
    begin = local * kChunk;
    count = static_cast<int32_t>(chunk_end(batch.targets[t], local) - begin);
  }

  C10_HOST_DEVICE int32_t rounds() const {
    return (count + kThreads * kSpan - 1) / (kThreads * kSpan);
  }
  // This thread's rounds [r, end): each span's first proposals stored, the rejected ones queued.
  // Where the target is contiguous, aligned for vector stores and takes the aligned spans, the
  // whole spans go as in fill_aligned_chunk: no layout test, the round keys and the law held in
  // registers through the loop (read from the batch, the clamp's bounds were loads under
  // predicates) and a store pointer that walks; the others (a chunk's tail, other layouts)
  // through fill_spans, span by span.
  C10_HOST_DEVICE void run(int32_t r, int32_t end, RedrawQueue& queue) {
    const FillDesc& target = batch.targets[t];
    const int32_t whole = whole_span_rounds(count / kSpan, thread, kThreads);
    if (target.vector_stores && target.full.aligned_range() && r < whole) {
      const PhiloxRoundKeys keys = held_round_keys(batch.states[t]);
      const Dist dist = batch.dists[t];
      const auto first_block = static_cast<uint64_t>(target.full.base + begin) / kSpan;
      const int32_t whole_end = end < whole ? end : whole;
      int32_t s = thread + r * kThreads;
      scalar_t* to = static_cast<scalar_t*>(target.data) + begin + s * kSpan;
      for (; r < whole_end; ++r, s += kThreads, to += kThreads * kSpan) {
        queue_span<scalar_t, true>(to, dist, keys, first_block + s,
                                   static_cast<uint32_t>(s * kSpan), queue);
      }
    }
    for (; r < end; ++r) {
      const int32_t s = (thread + r * kThreads) * kSpan;
      const int32_t span_end = count - s < kSpan ? count : s + kSpan;
      BatchBlockValues<acc_t, Dist> first{batch.dists[t], batch.states[t]};
      fill_spans<scalar_t, true>(target, first, begin + s, begin + span_end, 0, 1,
                                 [&](int64_t i, acc_t v) {
                                   if (v != v) queue.push(static_cast<uint32_t>(i - begin), 1);
                                 });
    }
  }
  // Thread `lane`'s share of the drain: redraws written over their placeholders.
  C10_HOST_DEVICE uint32_t drain(const RedrawQueue& queue, int32_t lane) const {
    return queue.drain(lane, [&](uint32_t local) {
      const FillDesc& target = batch.targets[t];
      const int64_t i = begin + local;
      static_cast<scalar_t*>(target.data)[target.layout.offset(i)] = static_cast<scalar_t>(
          batch.dists[t].redraw(OpaquePhiloxState{batch.states[t]}, target.full(i)));
    });
  }
};

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<scalar_t>{}, dist): the target's dtype and its law's sampler in the compute type.
template <typename F>
void visit_target(const LaunchTarget& t, const F& f) {
  TORCHINIT_DISPATCH_FLOAT_TYPES(t.self.scalar_type(), "fill_many_", [&] {
    visit_law<at::opmath_type<scalar_t>>(t.fill,
                                         [&](const auto& dist) { f(TypeTag<scalar_t>{}, dist); });
  });
}

namespace detail {

struct PendingBatch {
  virtual ~PendingBatch() = default;
  virtual void flush() = 0;
};

// The batch being filled for one (scalar_t, Dist); launched when full, and by the last flush.
template <typename scalar_t, typename Dist, typename Launch>
struct PendingBatchOf final : PendingBatch {
  static_assert(sizeof(FillBatch<Dist>) <= kParamBytes);
  const Launch& launch;
  FillBatch<Dist> batch{};

  explicit PendingBatchOf(const Launch& l) : launch(l) {}
  void add(const FillDesc& desc, const Dist& dist, PhiloxState state) {
    const int k = batch.count++;
    batch.targets[k] = desc;
    batch.dists[k] = dist;
    batch.states[k] = state;
    batch.first_chunk[k + 1] = batch.first_chunk[k] + num_chunks(desc.numel);
    if (batch.count == FillBatch<Dist>::kTargets) flush();
  }
  void flush() override {
    if (batch.count > 0) launch(TypeTag<scalar_t>{}, batch);
    batch.count = 0;
  }
};

}  // namespace detail

// fill_many_'s launches: the targets (none empty), grouped by dtype and law (the sampler's type,
// so a trunc_normal_ regime is a law of its own) into FillBatches, each passed to
// launch(TypeTag<scalar_t>{}, batch). The samplers are built here, on the host, once per target.
template <typename Launch>
void for_each_batch(const std::vector<LaunchTarget>& targets, const Launch& launch) {
  std::vector<std::pair<std::type_index, std::unique_ptr<detail::PendingBatch>>> pending;
  for (const LaunchTarget& t : targets) {
    visit_target(t, [&](auto tag, const auto& dist) {
      using Pending = detail::PendingBatchOf<typename decltype(tag)::type,
                                             std::decay_t<decltype(dist)>, Launch>;
      auto it = std::find_if(pending.begin(), pending.end(),
                             [](const auto& p) { return p.first == typeid(Pending); });
      if (it == pending.end()) {
        pending.emplace_back(typeid(Pending), std::make_unique<Pending>(launch));
        it = pending.end() - 1;
      }
      static_cast<Pending&>(*it->second).add(t.desc, dist, t.fill.state);
    });
  }
  for (auto& p : pending) p.second->flush();
}

}  // namespace torchinit::cuda
