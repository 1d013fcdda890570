// The AVX-512 matrix product walk shared by every weight format: tiles of kRows weight rows ×
// kTokens tokens over token blocks that stay in L2. Include only from files compiled with the
// AVX-512 flags (engine/cpu/CMakeLists.txt).
//
// A format supplies 16 weights at a time as fp32 (converted or dequantized in registers):
//   static constexpr int kVectors;       // 16-weight vectors per block (its scale's span)
//   static constexpr bool kBlockScaled;  // blocks summed apart, then scaled (NF4), or not
//   static constexpr bool kPackForPrompts;  // prompt chunks decode weights once (PackedTile)
//   static constexpr bool kDecodePrefetch;  // single tokens prefetch each row 1 KB ahead
//   __m512 Load(int64_t row, int64_t block, int v) const;  // vector v of a block of a row
//   __m512 LoadPartial(int64_t row, int64_t k, __mmask16 mask) const;  // tail, kVectors == 1
//   float BlockScale(int64_t row, int64_t block) const;    // kBlockScaled only
//   float Finish(int64_t row, float sum) const;            // the row's sum → y before bias
//   const void* BlockAddress(int64_t row, int64_t block) const;  // for prefetching
//   int64_t block_bytes() const;                           // stored bytes of a block of a row
//   int64_t cols() const;
// Each (row, token) output is one accumulation in a fixed order — 16 lanes over the row's
// vectors (a scaled format: one block sum per block, FMA'd with its scale), then one
// _mm512_reduce_add_ps — whatever the tile, the token block, the batch or the thread, so a
// batched or chunked step gives each token exactly what it gets alone.
#pragma once

// GCC 12 flags the intrinsics' own _mm512_undefined_* (a self-initialized variable) as
// uninitialized once inlined (GCC bug 105593); the warning is about the header, not our code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/cpu/cpu_kernels_isa.h"

namespace sinkserve::cpu::avx512 {

template <class Format, int kRows, int kTokens>
inline void Tile(const Format& f, const MatMulArgs& a, const int64_t* rows, int token) {
  constexpr int V = Format::kVectors;
  const int64_t cols = f.cols(), out_stride = a.w->rows;
  const float* x = a.x + token * cols;
  __m512 acc[kRows][kTokens];
  for (int i = 0; i < kRows; ++i)
    for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm512_setzero_ps();
  const int64_t blocks = cols / (16 * V);
  for (int64_t b = 0; b < blocks; ++b) {
    [[maybe_unused]] __m512 block_sum[kRows][kTokens];
    if constexpr (Format::kBlockScaled) {
      for (int i = 0; i < kRows; ++i)
        for (int t = 0; t < kTokens; ++t) block_sum[i][t] = _mm512_setzero_ps();
    }
    if constexpr (kTokens == 1 && Format::kDecodePrefetch) {  // each row's line 1 KB ahead
      if (b * f.block_bytes() % 64 == 0) {
        for (int i = 0; i < kRows; ++i) {
          _mm_prefetch(static_cast<const char*>(f.BlockAddress(rows[i], b)) + 1024, _MM_HINT_T0);
        }
      }
    }
    for (int v = 0; v < V; ++v) {
      const int64_t k = (b * V + v) * 16;
      __m512 xv[kTokens];
      for (int t = 0; t < kTokens; ++t) xv[t] = _mm512_loadu_ps(x + t * cols + k);
      for (int i = 0; i < kRows; ++i) {
        const __m512 w = f.Load(rows[i], b, v);
        for (int t = 0; t < kTokens; ++t) {
          if constexpr (Format::kBlockScaled) {
            block_sum[i][t] = _mm512_fmadd_ps(w, xv[t], block_sum[i][t]);
          } else {
            acc[i][t] = _mm512_fmadd_ps(w, xv[t], acc[i][t]);
          }
        }
      }
    }
    if constexpr (Format::kBlockScaled) {
      for (int i = 0; i < kRows; ++i) {
        const __m512 scale = _mm512_set1_ps(f.BlockScale(rows[i], b));
        for (int t = 0; t < kTokens; ++t) {
          acc[i][t] = _mm512_fmadd_ps(block_sum[i][t], scale, acc[i][t]);
        }
      }
    }
  }
  if constexpr (V == 1) {  // the last cols % 16 weights, through masked loads
    const int64_t k = blocks * 16;
    if (k < cols) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (cols - k)) - 1);
      for (int i = 0; i < kRows; ++i) {
        const __m512 w = f.LoadPartial(rows[i], k, mask);
        for (int t = 0; t < kTokens; ++t) {
          acc[i][t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mask, x + t * cols + k), acc[i][t]);
        }
      }
    }
  }
  for (int i = 0; i < kRows; ++i) {
    const float bias = a.bias != nullptr ? a.bias[rows[i]] : 0.0f;
    for (int t = 0; t < kTokens; ++t) {
      a.y[(token + t) * out_stride + rows[i]] =
          f.Finish(rows[i], _mm512_reduce_add_ps(acc[i][t])) + bias;
    }
  }
}

// Tiles of kRows rows × kTokens tokens over rows [row_begin, row_end) and tokens
// [token_begin, token_end) (a multiple of kTokens). The rows of a tile are spread evenly over
// the range (row_begin + j + g·stride) rather than adjacent: the tile then reads kRows long
// sequential streams, which the hardware prefetchers follow better than kRows short ones.
template <class Format, int kRows, int kTokens>
inline void RowTiles(const Format& f, const MatMulArgs& a, int64_t row_begin, int64_t row_end,
                     int token_begin, int token_end) {
  const int64_t stride = (row_end - row_begin) / kRows;
  int64_t tile_rows[kRows];
  for (int64_t j = 0; j < stride; ++j) {
    for (int g = 0; g < kRows; ++g) tile_rows[g] = row_begin + j + g * stride;
    for (int token = token_begin; token < token_end; token += kTokens) {
      Tile<Format, kRows, kTokens>(f, a, tile_rows, token);
    }
  }
  for (int64_t row = row_begin + kRows * stride; row < row_end; ++row) {
    for (int token = token_begin; token < token_end; token += kTokens) {
      Tile<Format, 1, kTokens>(f, a, &row, token);
    }
  }
}

// A prompt chunk's tile for a block-scaled format (NF4: the formats with kPackForPrompts):
// kPackedRows weight rows decoded once per kPackedColumns columns into an L1 buffer (fp32,
// unscaled, with the blocks' scales), then used by every token of the block in groups of 4. The
// lookups and scale decoding then cost once per block of up to 32 tokens instead of once per
// 2-4, and the inner loop is loads and FMAs only. The accumulators live in a small buffer
// between column chunks; each (row, token) still sums its lanes in column order and its scaled
// blocks in block order, so the result is bit for bit what Tile computes.
inline constexpr int kPackedRows = 6;
inline constexpr int kPackedColumns = 512;
inline constexpr int kPackedMaxTokens = 32;

template <class Format>
inline void PackedTile(const Format& f, const MatMulArgs& a, int64_t row0, int token_begin,
                       int token_end) {
  static_assert(Format::kBlockScaled, "packed only where decoding costs more than the buffer");
  constexpr int V = Format::kVectors;
  constexpr int kChunkBlocks = std::max(1, kPackedColumns / (16 * V));
  constexpr int kChunkVectors = kChunkBlocks * V;
  constexpr int R = kPackedRows;
  const int64_t cols = f.cols(), out_stride = a.w->rows;
  const int64_t blocks = cols / (16 * V);
  const int n_tokens = token_end - token_begin;
  alignas(64) float w[R][kChunkVectors * 16];
  float scales[R][kChunkBlocks];
  alignas(64) float acc[R][kPackedMaxTokens][16];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < n_tokens; ++t) _mm512_store_ps(acc[i][t], _mm512_setzero_ps());

  for (int64_t b0 = 0; b0 < blocks; b0 += kChunkBlocks) {
    const int nb = static_cast<int>(std::min<int64_t>(kChunkBlocks, blocks - b0));
    // The next chunk's weights come from memory while this one is computed: decoding it
    // otherwise waits for them with nothing else in flight.
    for (int i = 0; i < R; ++i) {
      const char* next = static_cast<const char*>(f.BlockAddress(row0 + i, b0 + kChunkBlocks));
      for (int64_t at = 0; at < kChunkBlocks * f.block_bytes(); at += 64) {
        _mm_prefetch(next + at, _MM_HINT_T0);
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int bb = 0; bb < nb; ++bb) {
        for (int v = 0; v < V; ++v) {
          _mm512_store_ps(&w[i][(bb * V + v) * 16], f.Load(row0 + i, b0 + bb, v));
        }
        scales[i][bb] = f.BlockScale(row0 + i, b0 + bb);
      }
    }
    for (int t0 = 0; t0 < n_tokens; t0 += 4) {
      const float* x = a.x + (token_begin + t0) * cols + b0 * V * 16;
      for (int bb = 0; bb < nb; ++bb) {
        __m512 block_sum[R][4];
        for (int i = 0; i < R; ++i)
          for (int t = 0; t < 4; ++t) block_sum[i][t] = _mm512_setzero_ps();
        for (int v = 0; v < V; ++v) {
          const int vv = bb * V + v;
          __m512 xv[4];
          for (int t = 0; t < 4; ++t) xv[t] = _mm512_loadu_ps(x + t * cols + vv * 16);
          for (int i = 0; i < R; ++i) {
            const __m512 wv = _mm512_load_ps(&w[i][vv * 16]);
            for (int t = 0; t < 4; ++t)
              block_sum[i][t] = _mm512_fmadd_ps(wv, xv[t], block_sum[i][t]);
          }
        }
        for (int i = 0; i < R; ++i) {
          const __m512 scale = _mm512_set1_ps(scales[i][bb]);
          for (int t = 0; t < 4; ++t) {
            _mm512_store_ps(acc[i][t0 + t], _mm512_fmadd_ps(block_sum[i][t], scale,
                                                            _mm512_load_ps(acc[i][t0 + t])));
          }
        }
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    const int64_t row = row0 + i;
    const float bias = a.bias != nullptr ? a.bias[row] : 0.0f;
    for (int t = 0; t < n_tokens; ++t) {
      a.y[(token_begin + t) * out_stride + row] =
          f.Finish(row, _mm512_reduce_add_ps(_mm512_load_ps(acc[i][t]))) + bias;
    }
  }
}

// Rows [row_begin, row_end) × tokens [token_begin, token_end) (a multiple of 4, at most
// kPackedMaxTokens): packed tiles of kPackedRows rows, the last rows by Tile.
template <class Format>
inline void PackedRowTiles(const Format& f, const MatMulArgs& a, int64_t row_begin, int64_t row_end,
                           int token_begin, int token_end) {
  int64_t row = row_begin;
  for (; row + kPackedRows <= row_end; row += kPackedRows) {
    PackedTile(f, a, row, token_begin, token_end);
  }
  for (; row < row_end; ++row) {
    for (int token = token_begin; token < token_end; token += 4) {
      Tile<Format, 1, 4>(f, a, &row, token);
    }
  }
}

// Every (row, token) of the range. Tokens go in blocks of 32, whose inputs (≤ 512 KB at 4096
// columns) stay in L2 while each row tile's weights, decoded once per 4 tokens from L1, pass
// over them: a prompt chunk reads the weights once per 32 tokens, not once per tile of 4.
// kRowsAlone rows per tile for a single token (decode: more rows in flight keep more loads
// outstanding), kRowsBy4 with 4 tokens, and 2 then 1 tokens for what is left of a block.
template <class Format, int kRowsAlone, int kRowsBy4>
void Rows(const Format& f, const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  constexpr int kTokenBlock = 32;
  for (int block = 0; block < a.n_tokens; block += kTokenBlock) {
    const int block_end = std::min(a.n_tokens, block + kTokenBlock);
    int token = block;
    const int by4_end = token + (block_end - token) / 4 * 4;
    bool packed = false;
    if constexpr (Format::kPackForPrompts) {
      packed = by4_end - token >= 8;
      if (packed) PackedRowTiles(f, a, row_begin, row_end, token, by4_end);
    }
    if (!packed) RowTiles<Format, kRowsBy4, 4>(f, a, row_begin, row_end, token, by4_end);
    token = by4_end;
    const int by2_end = token + (block_end - token) / 2 * 2;
    RowTiles<Format, kRowsBy4, 2>(f, a, row_begin, row_end, token, by2_end);
    token = by2_end;
    if (token < block_end)
      RowTiles<Format, kRowsAlone, 1>(f, a, row_begin, row_end, token, block_end);
  }
}

}  // namespace sinkserve::cpu::avx512
