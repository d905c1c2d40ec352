// CPU kernel of sparse_: in every column exactly ceil(sparsity * rows) zeros at uniformly random
// rows, independently across columns; the other entries N(0, std^2). Two parallel passes:
//  1. over groups of 64 columns: Floyd's algorithm picks the smaller of the zero / nonzero sets of
//     each column, one bit per column in the group's 64-bit row masks (1 bit per element);
//  2. over rows: each row is written once, left to right, 64 elements at a time from the masks
//     and a running batch of normals, so memory sees one sequential pass, as in fill_.
// Randomness only for what is needed: one 32-bit draw per minority element, one normal per nonzero.
// Which draw and which normal each element takes: docs/rng-contract.md, "sparse_ numbering".
#include <ATen/Dispatch_v2.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <memory>

#include "../plan/checks.h"
#include "../samplers/sparse_draws.h"
#include "../samplers/uniform_normal.h"
#include "random_fill.h"

namespace torchinit::cpu {
namespace {

// Columns of a group: one bit each in a 64-bit row mask.
constexpr int64_t kGroupColumns = 64;
// A batch of Floyd draws is one philox_lanes call.
static_assert(kLanes == kFloydBlocksPerBatch);
constexpr int64_t kDrawBatch = kFloydBatch;
// Normals generated at a time ahead of placing them (a multiple of every generate_range batch).
constexpr int64_t kValueBatch = 1024;
// Tensors at least this large are written with non-temporal stores where possible: they would
// only evict the caches.
constexpr int64_t kNonTemporalBytes = int64_t{8} << 20;

struct FloydColumn {
  int64_t column;
  uint64_t flag;  // the column's bit in row_masks; 0 for none (its draws then change nothing)
};

// Sets each column's flag in row_masks[r] for a uniformly random `count`-subset of rows r in
// [0, rows) (Floyd's algorithm: one draw per chosen row, no permutation array). Two columns at
// once: each column's membership tests form a dependent chain, and two independent chains
// interleave where one would stall (figures: benchmarks/README.md, "Tuning constants").
// Draw d picks from [0, n), n = rows - count + d + 1, as floor(x n / 2^32) of a 32-bit word x, 64
// at a time in SIMD; it is exactly uniform by Lemire's rejection ("Fast random integer generation
// in an interval", 2019): a rejected draw (probability below n / 2^32), or one with n >= 2^32, is
// floyd_fallback_draw's, from a 64-bit word of stream 2, instead.
template <SimdLevel L>
inline void choose_rows(PhiloxState state, int64_t rows, int64_t count,
                        const FloydColumn (&columns)[2], uint64_t* row_masks) {
  const int64_t batches = (count + kDrawBatch - 1) / kDrawBatch;
  static_assert(kWideLanes == 2 * kLanes);
  uint32_t words[4][kWideLanes];  // both columns' blocks in one call: column k's in lanes 16k..
  uint32_t x[2][kDrawBatch];      // draw d0 + i of column k: word i / kLanes of block i % kLanes
  uint64_t candidates[2][kDrawBatch];
  for (int64_t batch = 0; batch < batches; ++batch) {
    const int64_t d0 = batch * kDrawBatch;
    const int64_t draws = std::min(kDrawBatch, count - d0);
    const uint64_t n0 = static_cast<uint64_t>(rows - count + d0 + 1);  // draw d0's range
    uint64_t blocks[kWideLanes];
    for (int k = 0; k < 2; ++k) {
      const uint64_t first = floyd_batch_block(columns[k].column, batches, batch);
      for (int j = 0; j < kLanes; ++j) blocks[kLanes * k + j] = first + j;
    }
    philox_lanes<L>(state, blocks, words);
    for (int k = 0; k < 2; ++k) {
      for (int w = 0; w < 4; ++w) std::copy_n(words[w] + kLanes * k, kLanes, x[k] + kLanes * w);
      uint32_t check = static_cast<uint64_t>(rows) >> 32 != 0;
      for (int64_t i = 0; i < kDrawBatch; ++i) {
        const uint32_t n = static_cast<uint32_t>(n0 + i);
        const uint64_t product = static_cast<uint64_t>(x[k][i]) * n;
        candidates[k][i] = product >> 32;
        check |= static_cast<uint32_t>(product) < n;  // may be rejected
      }
      for (int64_t i = 0; check && i < draws; ++i) {
        if (floyd_word_rejected(x[k][i], n0 + i)) {
          candidates[k][i] = floyd_fallback_draw(state, columns[k].column, count, d0 + i, n0 + i);
        }
      }
    }
    // Only this loop is sequential: a candidate already chosen is replaced by the range's top.
    const uint64_t flags[2] = {columns[0].flag, columns[1].flag};  // kept in registers
    for (int64_t i = 0; i < draws; ++i) {
      const uint64_t top = n0 - 1 + i;
      for (int k = 0; k < 2; ++k) {
        const uint64_t row = row_masks[candidates[k][i]] & flags[k] ? top : candidates[k][i];
        row_masks[row] |= flags[k];
      }
    }
  }
}

// Phase 2's view of a call: the chosen-set masks and where the values go.
template <typename scalar_t>
struct SparseRows {
  using acc_t = at::opmath_type<scalar_t>;
  const uint64_t* masks;  // bit c % 64 of masks[(c / 64) * rows + r]: (r, c) is chosen
  bool chosen_are_zeros;
  int64_t rows, groups;
  uint64_t last_group_bits;  // the real columns of the last group
  int64_t total_nonzeros;
  scalar_t* data;
  int64_t row_stride, col_stride, cols;
  Normal<acc_t> normal;
  PhiloxState state;

  uint64_t nonzero_bits(int64_t group, int64_t r) const {
    return torchinit::nonzero_bits(masks[group * rows + r], chosen_are_zeros,
                                   group + 1 == groups ? last_group_bits : ~uint64_t{0});
  }

  // Nonzeros in the rows above `row`: the number of the first normal that row takes. (Group by
  // group, so the masks are read sequentially.)
  int64_t nonzeros_before(int64_t row) const {
    int64_t count = 0;
    for (int64_t group = 0; group < groups; ++group) {
      for (int64_t r = 0; r < row; ++r) count += __builtin_popcountll(nonzero_bits(group, r));
    }
    return count;
  }
};

// Normals next, next + 1, ... (up to end) of the normal_ stream, generated kValueBatch at a time
// with the instructions of level L.
template <SimdLevel L, typename acc_t>
class NormalQueue {
 public:
  NormalQueue(const Normal<acc_t>& normal, PhiloxState state, int64_t next, int64_t end)
      : normal_(normal), state_(state), next_(next), end_(end) {}

  // The queued normals: at least kGroupColumns of them unless the stream ends first, and
  // kGroupColumns more slots readable (for full-vector loads).
  const acc_t* front() {
    while (have_ - used_ < kGroupColumns && next_ < end_) {
      std::copy(values_ + used_, values_ + have_, values_);
      have_ -= used_;
      used_ = 0;
      // Up to a multiple of kValueBatch, so only the first call generates a partial batch.
      const int64_t count = std::min(kValueBatch - next_ % kValueBatch, end_ - next_);
      generate_range<L>(normal_, state_, values_ + have_, next_, next_ + count);
      have_ += count;
      next_ += count;
    }
    return values_ + used_;
  }

  void pop(int64_t count) { used_ += count; }

 private:
  acc_t values_[kValueBatch + 2 * kGroupColumns];
  int64_t used_ = 0;  // values_[used_, have_) are queued
  int64_t have_ = 0;
  Normal<acc_t> normal_;
  PhiloxState state_;
  int64_t next_;
  int64_t end_;
};

// Writes rows [row_begin, row_end) left to right, 64 columns at a time: zeros, then each nonzero
// where it goes (in place for contiguous rows of acc_t, else through a segment converted on the
// way out).
template <SimdLevel L, typename scalar_t>
inline void write_rows_any(const SparseRows<scalar_t>& p, int64_t row_begin, int64_t row_end) {
  using acc_t = typename SparseRows<scalar_t>::acc_t;
  const bool in_place = std::is_same_v<scalar_t, acc_t> && p.col_stride == 1;
  NormalQueue<L, acc_t> queue(p.normal, p.state, p.nonzeros_before(row_begin), p.total_nonzeros);
  acc_t segment[kGroupColumns];
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t group = 0; group < p.groups; ++group) {
      const int64_t c0 = group * kGroupColumns;
      const int64_t width = std::min(kGroupColumns, p.cols - c0);
      scalar_t* const dst = p.data + r * p.row_stride + c0 * p.col_stride;
      acc_t* const out = in_place ? reinterpret_cast<acc_t*>(dst) : segment;
      if (width == kGroupColumns) {
        for (int64_t c = 0; c < kGroupColumns; ++c) out[c] = acc_t(0);
      } else {
        for (int64_t c = 0; c < width; ++c) out[c] = acc_t(0);
      }
      const acc_t* values = queue.front();
      const uint64_t bits = p.nonzero_bits(group, r);
      for (uint64_t rest = bits; rest; rest &= rest - 1) out[__builtin_ctzll(rest)] = *values++;
      queue.pop(__builtin_popcountll(bits));
      if (!in_place) {
        for (int64_t c = 0; c < width; ++c)
          dst[c * p.col_stride] = static_cast<scalar_t>(segment[c]);
      }
    }
  }
}

#if TORCHINIT_X86_SIMD
// One 64-column segment of a float row with unit column stride: each 16-column quarter is one
// expand of the next normals into the zero vector, stored whole. With `non_temporal` (64-byte
// aligned rows of a tensor far larger than the caches) the stores are non-temporal: no read for
// ownership, so memory sees only the writes.
TORCHINIT_TARGET_AVX512 inline void write_segment_avx512(float* dst, const float* values,
                                                         uint64_t bits, int64_t width,
                                                         bool non_temporal) {
  for (int64_t q = 0; q < width; q += 16) {
    const __mmask16 take = static_cast<__mmask16>(bits >> q);
    const __m512 v = _mm512_maskz_expand_ps(take, _mm512_loadu_ps(values));
    values += __builtin_popcount(take);
    if (width - q < 16) {
      _mm512_mask_storeu_ps(dst + q, static_cast<__mmask16>((1u << (width - q)) - 1), v);
    } else if (non_temporal) {
      _mm512_stream_ps(dst + q, v);
    } else {
      _mm512_storeu_ps(dst + q, v);
    }
  }
}

// For each 8-bit mask, the permutation that expands the next popcount(mask) values into its set
// lanes (3 bits per lane): AVX2 has no expand instruction.
constexpr std::array<uint32_t, 256> kExpandPermutations = [] {
  std::array<uint32_t, 256> table{};
  for (uint32_t mask = 0; mask < 256; ++mask) {
    uint32_t next = 0;
    for (uint32_t lane = 0; lane < 8; ++lane) {
      if (mask >> lane & 1) table[mask] |= next++ << (3 * lane);
    }
  }
  return table;
}();

// write_segment_avx512 for AVX2: 8 columns at a time, expanded by a table permutation and masked.
TORCHINIT_TARGET_AVX2 inline void write_segment_avx2(float* dst, const float* values, uint64_t bits,
                                                     int64_t width, bool non_temporal) {
  const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i lane_shifts = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
  for (int64_t q = 0; q < width; q += 8) {
    const uint32_t take = static_cast<uint32_t>(bits >> q) & 0xFF;
    const __m256i permutation = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kExpandPermutations[take])),
                          lane_shifts),
        _mm256_set1_epi32(7));
    const __m256i taken = _mm256_cmpeq_epi32(
        _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(take)), lane_bits), lane_bits);
    const __m256 v = _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(values), permutation),
                                   _mm256_castsi256_ps(taken));
    values += __builtin_popcount(take);
    if (width - q < 8) {
      const __m256i head = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(width - q)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      _mm256_maskstore_ps(dst + q, head, v);
    } else if (non_temporal) {
      _mm256_stream_ps(dst + q, v);
    } else {
      _mm256_storeu_ps(dst + q, v);
    }
  }
}

// write_rows for float rows with unit column stride, a segment at a time with level L's vector
// writer.
template <SimdLevel L>
inline void write_float_rows(const SparseRows<float>& p, int64_t row_begin, int64_t row_end,
                             bool non_temporal) {
  NormalQueue<L, float> queue(p.normal, p.state, p.nonzeros_before(row_begin), p.total_nonzeros);
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t group = 0; group < p.groups; ++group) {
      const int64_t c0 = group * kGroupColumns;
      const int64_t width = std::min(kGroupColumns, p.cols - c0);
      float* const dst = p.data + r * p.row_stride + c0;
      const uint64_t bits = p.nonzero_bits(group, r);
      if constexpr (L == SimdLevel::kAvx512) {
        write_segment_avx512(dst, queue.front(), bits, width, non_temporal);
      } else {
        write_segment_avx2(dst, queue.front(), bits, width, non_temporal);
      }
      queue.pop(__builtin_popcountll(bits));
    }
  }
  if (non_temporal) _mm_sfence();
}
#endif

// Writes rows [row_begin, row_end) with level L's vector stores where it has them (float rows of
// unit column stride).
template <SimdLevel L, typename scalar_t>
inline void write_rows(const SparseRows<scalar_t>& p, int64_t row_begin, int64_t row_end,
                       bool non_temporal) {
#if TORCHINIT_X86_SIMD
  if constexpr (std::is_same_v<scalar_t, float> && L != SimdLevel::kDefault) {
    if (p.col_stride == 1) return write_float_rows<L>(p, row_begin, row_end, non_temporal);
  }
#endif
  write_rows_any<L>(p, row_begin, row_end);
}

template <typename scalar_t>
void sparse_fill(const at::Tensor& self, const FloydChoice& choice, double std, PhiloxState state) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = self.size(0);
  const int64_t cols = self.size(1);
  const int64_t groups = (cols + kGroupColumns - 1) / kGroupColumns;
  const std::unique_ptr<uint64_t[]> masks(new uint64_t[groups * rows]);
  parallel_for(0, groups, 1, [&](int64_t group_begin, int64_t group_end) {
    for (int64_t group = group_begin; group < group_end; ++group) {
      uint64_t* const row_masks = masks.get() + group * rows;
      std::fill(row_masks, row_masks + rows, 0);
      const int64_t c0 = group * kGroupColumns;
      const int64_t c1 = std::min(cols, c0 + kGroupColumns);
      for (int64_t c = c0; c < c1; c += 2) {
        const uint64_t flag = uint64_t{1} << (c - c0);
        const FloydColumn pair[2] = {
            {c, flag}, c + 1 < c1 ? FloydColumn{c + 1, flag << 1} : FloydColumn{c, 0}};
        with_simd_level([&](auto level) {
          choose_rows<decltype(level)::value>(state, rows, choice.count, pair, row_masks);
        });
      }
    }
  });

  const SparseRows<scalar_t> sparse_rows{masks.get(),
                                         choice.chosen_are_zeros,
                                         rows,
                                         groups,
                                         ~uint64_t{0} >> (kGroupColumns * groups - cols),
                                         cols * choice.nonzeros,
                                         self.data_ptr<scalar_t>(),
                                         self.stride(0),
                                         self.stride(1),
                                         cols,
                                         Normal<acc_t>{acc_t(0), static_cast<acc_t>(std)},
                                         state};
  // Non-temporal stores for aligned rows of a tensor far larger than the caches.
  const bool non_temporal = reinterpret_cast<uintptr_t>(sparse_rows.data) % 64 == 0 &&
                            sparse_rows.row_stride % 16 == 0 &&
                            rows * cols * int64_t{sizeof(scalar_t)} >= kNonTemporalBytes;
  parallel_for(
      0, rows, std::max<int64_t>(1, kGrain / cols), [&](int64_t row_begin, int64_t row_end) {
        with_simd_level([&](auto level) {
          write_rows<decltype(level)::value>(sparse_rows, row_begin, row_end, non_temporal);
        });
      });
}

void sparse_cpu(at::Tensor& self, double sparsity, double std,
                std::optional<at::Generator> generator) {
  check_sparse_args(self, sparsity, std);
  if (self.numel() == 0) return;
  const PhiloxState state = draw_philox_state(generator);
  const FloydChoice choice = floyd_choice(self.size(0), sparsity);
  TORCHINIT_DISPATCH_FLOAT_TYPES(self.scalar_type(), "sparse_",
                                 [&] { sparse_fill<scalar_t>(self, choice, std, state); });
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CPU, m) {
  m.impl("sparse_", &sparse_cpu);
}

}  // namespace torchinit::cpu
