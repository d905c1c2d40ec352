// CPU kernel of sparse_: in every column exactly ceil(sparsity * rows) zeros at uniformly random
// rows, independently across columns; the other entries N(0, std^2). Parallel over tiles of
// columns, one pass over memory, and randomness only for what is needed: the positions of the
// smaller of the two sets (Floyd's algorithm) and one normal per nonzero.
//
// RNG contract (key and offset drawn once per call): the j-th nonzero of column c, counting rows
// top-down, is normal number c * nonzeros + j of the normal_ stream (stream 0). Column c's
// selection draws d = 0, 1, ... are 64-bit words from stream 1, block c * ceil(draws / 2) + d / 2,
// words 2 (d % 2) and 2 (d % 2) + 1.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../checks.h"
#include "../transforms.h"
#include "random_fill.h"

namespace torchinit::cpu {
namespace {

// Columns a task owns: a 64-byte line of float32 per row, so tiles never share a cache line.
constexpr int64_t kTileColumns = 16;

// A uniform integer in [0, n) from 64 random bits: the high half of the 128-bit product (bias
// below n / 2^64).
inline uint64_t below(uint64_t n, uint32_t lo, uint32_t hi) {
  const uint64_t bits = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
}

// Marks a uniformly random `count`-subset of [0, rows) in `chosen` (Floyd's algorithm: one draw
// per chosen element, no permutation array).
void choose_rows(PhiloxKey key, int64_t column, int64_t rows, int64_t count,
                 std::vector<uint64_t>& chosen) {
  std::fill(chosen.begin(), chosen.end(), 0);
  const int64_t blocks_per_column = (count + 1) / 2;
  const uint64_t first_block = stream_block(1, static_cast<uint64_t>(column * blocks_per_column));
  uint32_t words[4][kLanes];
  for (int64_t d = 0; d < count; ++d) {
    const int64_t block = d / 2;
    if (block % kLanes == 0 && d % 2 == 0) philox_lanes(key, first_block + block, words);
    const int lane = static_cast<int>(block % kLanes);
    const int word = 2 * static_cast<int>(d % 2);
    const int64_t top = rows - count + d;  // draw from [0, top]
    int64_t row = static_cast<int64_t>(below(static_cast<uint64_t>(top + 1), words[word][lane],
                                             words[word + 1][lane]));
    if (chosen[row >> 6] >> (row & 63) & 1) row = top;
    chosen[row >> 6] |= uint64_t{1} << (row & 63);
  }
}

template <typename scalar_t>
void sparse_fill(const at::Tensor& self, int64_t zeros, double std, PhiloxKey key) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = self.size(0);
  const int64_t cols = self.size(1);
  const int64_t nonzeros = rows - zeros;
  const bool choose_zeros = zeros < nonzeros;
  const int64_t row_stride = self.stride(0);
  const int64_t col_stride = self.stride(1);
  scalar_t* const data = self.data_ptr<scalar_t>();
  const Normal<acc_t> normal{acc_t(0), static_cast<acc_t>(std)};
  const int64_t tiles = (cols + kTileColumns - 1) / kTileColumns;
  at::parallel_for(0, tiles, 1, [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<uint64_t> chosen((rows + 63) / 64);
    std::vector<acc_t> values(nonzeros);
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t c0 = tile * kTileColumns;
      const int64_t c1 = std::min(cols, c0 + kTileColumns);
      // Zero the tile row by row (whole cache lines), then place each column's nonzeros.
      for (int64_t r = 0; r < rows; ++r) {
        scalar_t* row = data + r * row_stride;
        if (col_stride == 1) {
          std::fill(row + c0, row + c1, scalar_t(0));
        } else {
          for (int64_t c = c0; c < c1; ++c) row[c * col_stride] = scalar_t(0);
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        choose_rows(key, c, rows, choose_zeros ? zeros : nonzeros, chosen);
        generate_range(normal, key, values.data(), c * nonzeros, (c + 1) * nonzeros);
        scalar_t* column = data + c * col_stride;
        int64_t j = 0;
        for (size_t w = 0; w < chosen.size(); ++w) {
          uint64_t nonzero_bits = choose_zeros ? ~chosen[w] : chosen[w];
          if (w + 1 == chosen.size() && rows % 64) nonzero_bits &= (uint64_t{1} << (rows % 64)) - 1;
          while (nonzero_bits) {
            const int64_t r = static_cast<int64_t>(w) * 64 + __builtin_ctzll(nonzero_bits);
            column[r * row_stride] = static_cast<scalar_t>(values[j++]);
            nonzero_bits &= nonzero_bits - 1;
          }
        }
      }
    }
  });
}

void sparse_cpu(at::Tensor& self, double sparsity, double std,
                std::optional<at::Generator> generator) {
  check_sparse_args(self, sparsity, std);
  if (self.numel() == 0) return;
  const PhiloxKey key = draw_philox_key(generator);
  const int64_t zeros = static_cast<int64_t>(std::ceil(sparsity * static_cast<double>(self.size(0))));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "sparse_", [&] {
    sparse_fill<scalar_t>(self, zeros, std, key);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CPU, m) {
  m.impl("sparse_", &sparse_cpu);
}

}  // namespace torchinit::cpu
