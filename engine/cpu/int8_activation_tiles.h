// The tile walk of the int8-activation kernels (engine/cpu/int8_activations.h), shared by the
// AVX2 and AVX-512 VNNI files: Tile<kRows, kTokens>::Run(args, rows, token) computes kRows
// weight rows × kTokens tokens, reading each weight vector once for the kTokens tokens. Each
// (row, token) output is one accumulation in a fixed order whatever the tile, so a batched or
// chunked step gives each token exactly what it gets alone.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/cpu/int8_activations.h"

namespace sinkserve::cpu::int8_tiles {

// Rows [row_begin, row_end) × tokens [token_begin, token_end) (a multiple of kTokens). The rows
// of a tile are spread over the range (row_begin + j + g·stride), as avx512_tiles.h does: kRows
// long sequential streams, which the hardware prefetchers follow better than short ones.
template <template <int, int> class Tile, int kRows, int kTokens>
void RowTiles(const Int8MatMulArgs& a, int64_t row_begin, int64_t row_end, int token_begin,
              int token_end) {
  const int64_t stride = (row_end - row_begin) / kRows;
  int64_t tile_rows[kRows];
  for (int64_t j = 0; j < stride; ++j) {
    for (int g = 0; g < kRows; ++g) tile_rows[g] = row_begin + j + g * stride;
    for (int token = token_begin; token < token_end; token += kTokens) {
      Tile<kRows, kTokens>::Run(a, tile_rows, token);
    }
  }
  for (int64_t row = row_begin + kRows * stride; row < row_end; ++row) {
    for (int token = token_begin; token < token_end; token += kTokens) {
      Tile<1, kTokens>::Run(a, &row, token);
    }
  }
}

// Every (row, token) of the range, in token blocks of 64 (64 × 4096 int8 codes = 256 KB stay
// in L2 while the weights pass over them): tiles of kRowsBy4 rows × 4 tokens, then × 2, and
// kRowsAlone rows × 1 token for what is left (decode).
template <template <int, int> class Tile, int kRowsAlone, int kRowsBy4>
void Rows(const Int8MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  constexpr int kTokenBlock = 64;
  const int n_tokens = a.x->n_tokens;
  for (int block = 0; block < n_tokens; block += kTokenBlock) {
    const int block_end = std::min(n_tokens, block + kTokenBlock);
    const int by4_end = block + (block_end - block) / 4 * 4;
    RowTiles<Tile, kRowsBy4, 4>(a, row_begin, row_end, block, by4_end);
    const int by2_end = by4_end + (block_end - by4_end) / 2 * 2;
    RowTiles<Tile, kRowsBy4, 2>(a, row_begin, row_end, by4_end, by2_end);
    RowTiles<Tile, kRowsAlone, 1>(a, row_begin, row_end, by2_end, block_end);
  }
}

}  // namespace sinkserve::cpu::int8_tiles
