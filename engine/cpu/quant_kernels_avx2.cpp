// Int8 and NF4 matrix products with AVX2 + FMA, dequantizing in registers (the weights are
// never written out in fp32). Compiled with -mavx2 -mfma; cpu_kernels.cpp calls these only
// after a run-time check.
//
// Tiles of kRows rows × kTokens tokens: each weight vector decoded is used kTokens times, and
// kRows·kTokens independent accumulations hide the FMA latency. A tile never changes the
// arithmetic of one (row, token): one accumulation over the row in a fixed order, so batched
// steps are bit-identical to single ones (NOTES.md, "Quantization").
#include <immintrin.h>

#include <array>
#include <cstring>

#include "engine/cpu/avx2_helpers.h"
#include "engine/cpu/cpu_kernels_isa.h"

namespace sinkserve::cpu {
namespace {

// Calls Tile<kRows, kTokens>::Run(args, rows, token) over rows [row_begin, row_end) and every
// token, in token tiles of 4, 2, 1 paired with row tiles of kRowsBy4, kRowsBy2, kRowsBy1 rows
// (what fits the 16 ymm registers); leftover rows go one at a time. The rows of a tile are
// spread evenly over the range (row_begin + j + g·stride) rather than adjacent: the tile then
// reads kRows long sequential streams instead of kRows short ones, which the hardware
// prefetchers follow much better (int8 at batch 1, one thread: 30 → 15 ms for the 410m
// matrices).
template <int kRowsBy4, int kRowsBy2, int kRowsBy1, template <int, int> class Tile>
void ForEachTile(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  auto rows = [&]<int kRows, int kTokens>(int token) {
    const int64_t stride = (row_end - row_begin) / kRows;
    int64_t tile_rows[kRows];
    for (int64_t j = 0; j < stride; ++j) {
      for (int g = 0; g < kRows; ++g) tile_rows[g] = row_begin + j + g * stride;
      Tile<kRows, kTokens>::Run(a, tile_rows, token);
    }
    for (int64_t row = row_begin + kRows * stride; row < row_end; ++row) {
      Tile<1, kTokens>::Run(a, &row, token);
    }
  };
  int token = 0;
  for (; token + 4 <= a.n_tokens; token += 4) rows.template operator()<kRowsBy4, 4>(token);
  for (; token + 2 <= a.n_tokens; token += 2) rows.template operator()<kRowsBy2, 2>(token);
  for (; token < a.n_tokens; ++token) rows.template operator()<kRowsBy1, 1>(token);
}

// ---- int8: y = (Σ_k q[k]·x[k]) · absmax·fp32(1/127) + bias ----

// 8 int8 codes → 8 fp32 values.
inline __m256 LoadInt8x8(const int8_t* q) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}

template <int kRows, int kTokens>
struct Int8Tile {
  static void Run(const MatMulArgs& a, const int64_t* rows, int token) {
    const Int8Rows& w = *a.w->int8;
    const int64_t cols = w.cols;
    const float* x = a.x + token * cols;
    __m256 acc[kRows][kTokens];
    for (int i = 0; i < kRows; ++i)
      for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm256_setzero_ps();
    const int64_t vector_cols = cols & ~int64_t{7};
    for (int64_t k = 0; k < vector_cols; k += 8) {
      for (int i = 0; i < kRows; ++i) {
        // Decode: each row's line 1 KB ahead, as cpu_kernels_avx2.cpp does (160m int8, two
        // threads: 116 → 146 tok/s). Not for NF4, whose AVX2 decode is bound by its lookups
        // (410m: 50.5 → 42.3 tok/s with it).
        if constexpr (kTokens == 1) {
          if (k % 64 == 0) _mm_prefetch(w.codes.data() + rows[i] * cols + k + 1024, _MM_HINT_T0);
        }
        const __m256 weights = LoadInt8x8(&w.codes[rows[i] * cols + k]);
        for (int t = 0; t < kTokens; ++t) {
          acc[i][t] = _mm256_fmadd_ps(weights, _mm256_loadu_ps(x + t * cols + k), acc[i][t]);
        }
      }
    }
    for (int i = 0; i < kRows; ++i) {
      const int8_t* codes = &w.codes[rows[i] * cols];
      const float scale = w.row_absmax[rows[i]] * kInverse127;
      const float bias = a.bias != nullptr ? a.bias[rows[i]] : 0.0f;
      for (int t = 0; t < kTokens; ++t) {
        float sum = HorizontalSum(acc[i][t]);
        for (int64_t k = vector_cols; k < cols; ++k) sum += codes[k] * x[t * cols + k];
        a.y[(token + t) * w.rows + rows[i]] = sum * scale + bias;
      }
    }
  }
};

// ---- NF4: y = Σ_blocks absmax_b · (Σ_{k in b} nf4[code_k]·x[k]) + bias ----
//
// A block's 32 code bytes are split into high and low nibbles (32 each); each set of 32
// nibbles becomes 32 fp32 NF4 values with four byte-table lookups (vpshufb: byte j of every
// value, indexed by the nibble) and a 4×4 byte transpose (unpack 8 → 16 → 32 bits). That is
// three shuffles per 8 values, about half the cost of two 8-entry vpermps + blend on this
// CPU (Zen 3). The transpose leaves the values in a fixed order within the block, so the
// input is reordered to match once per call (Nf4InputOrderAvx2), not the weights.

struct Nf4Tables {
  __m256i byte_plane[4];  // byte j of kNf4Values[c] at index c, in both 128-bit lanes
};

const Nf4Tables& Nf4LookupTables() {
  static const Nf4Tables tables = [] {
    Nf4Tables t;
    for (int plane = 0; plane < 4; ++plane) {
      alignas(16) uint8_t bytes[16];
      for (int code = 0; code < 16; ++code) {
        uint32_t bits;
        std::memcpy(&bits, &kNf4Values[code], 4);
        bytes[code] = static_cast<uint8_t>(bits >> (8 * plane));
      }
      t.byte_plane[plane] =
          _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(bytes)));
    }
    return t;
  }();
  return tables;
}

// Where decoded value j (set s = j / 32: high then low nibbles; vector v = j / 8 % 4;
// lane p = j % 8) comes from in the block: code byte p < 4 ? 4v + p : 16 + 4v + p − 4
// (unpacklo/hi work per 128-bit lane), element 2·byte + s.
constexpr std::array<uint8_t, kNf4BlockSize> Nf4DecodeOrder() {
  std::array<uint8_t, kNf4BlockSize> order{};
  for (int j = 0; j < kNf4BlockSize; ++j) {
    const int set = j / 32, vector = j / 8 % 4, lane = j % 8;
    const int byte = lane < 4 ? 4 * vector + lane : 16 + 4 * vector + lane - 4;
    order[j] = static_cast<uint8_t>(2 * byte + set);
  }
  return order;
}
constexpr std::array<uint8_t, kNf4BlockSize> kNf4DecodeOrder = Nf4DecodeOrder();

// 32 nibbles (one per byte) → 4 × 8 NF4 values, in kNf4DecodeOrder.
inline void DecodeNibbles(const Nf4Tables& tables, __m256i nibbles, __m256 values[4]) {
  const __m256i b0 = _mm256_shuffle_epi8(tables.byte_plane[0], nibbles);
  const __m256i b1 = _mm256_shuffle_epi8(tables.byte_plane[1], nibbles);
  const __m256i b2 = _mm256_shuffle_epi8(tables.byte_plane[2], nibbles);
  const __m256i b3 = _mm256_shuffle_epi8(tables.byte_plane[3], nibbles);
  const __m256i low_half_lo = _mm256_unpacklo_epi8(b0, b1);
  const __m256i low_half_hi = _mm256_unpackhi_epi8(b0, b1);
  const __m256i high_half_lo = _mm256_unpacklo_epi8(b2, b3);
  const __m256i high_half_hi = _mm256_unpackhi_epi8(b2, b3);
  values[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(low_half_lo, high_half_lo));
  values[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(low_half_lo, high_half_lo));
  values[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(low_half_hi, high_half_hi));
  values[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(low_half_hi, high_half_hi));
}

inline float BlockAbsmax(const Matrix& w, int64_t block) {
  // Double-quantized absmax are decoded per block on the fly: one table load and two flops
  // per 64 weights, and nothing resident beyond the 8-bit codes (NOTES.md).
  return w.nf4_absmax != nullptr ? DequantizeAbsmaxAt(*w.nf4_absmax, block)
                                 : w.nf4->block_absmax[block];
}

template <int kRows, int kTokens>
struct Nf4Tile {
  static void Run(const MatMulArgs& a, const int64_t* rows, int token) {
    const Matrix& w = *a.w;
    const Nf4Tables& tables = Nf4LookupTables();
    const __m256i low_nibble = _mm256_set1_epi8(0x0f);
    const int64_t cols = w.cols, blocks_per_row = cols / kNf4BlockSize;
    const float* x = a.x + token * cols;  // in kNf4DecodeOrder within each block
    __m256 acc[kRows][kTokens];
    for (int i = 0; i < kRows; ++i)
      for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks_per_row; ++b) {
      for (int i = 0; i < kRows; ++i) {
        const int64_t block = rows[i] * blocks_per_row + b;
        const __m256i codes = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(&w.nf4->codes[block * (kNf4BlockSize / 2)]));
        __m256 block_sum[kTokens];
        for (int t = 0; t < kTokens; ++t) block_sum[t] = _mm256_setzero_ps();
        for (int set = 0; set < 2; ++set) {
          const __m256i nibbles = set == 0
                                      ? _mm256_and_si256(_mm256_srli_epi16(codes, 4), low_nibble)
                                      : _mm256_and_si256(codes, low_nibble);
          __m256 values[4];
          DecodeNibbles(tables, nibbles, values);
          for (int v = 0; v < 4; ++v) {
            const float* xv = x + b * kNf4BlockSize + set * 32 + v * 8;
            for (int t = 0; t < kTokens; ++t) {
              block_sum[t] =
                  _mm256_fmadd_ps(values[v], _mm256_loadu_ps(xv + t * cols), block_sum[t]);
            }
          }
        }
        // The absmax scales a whole block's sum: one FMA per block instead of a multiply per
        // weight vector.
        const __m256 absmax = _mm256_set1_ps(BlockAbsmax(w, block));
        for (int t = 0; t < kTokens; ++t) {
          acc[i][t] = _mm256_fmadd_ps(block_sum[t], absmax, acc[i][t]);
        }
      }
    }
    for (int i = 0; i < kRows; ++i) {
      const float bias = a.bias != nullptr ? a.bias[rows[i]] : 0.0f;
      for (int t = 0; t < kTokens; ++t) {
        a.y[(token + t) * w.rows + rows[i]] = HorizontalSum(acc[i][t]) + bias;
      }
    }
  }
};

}  // namespace

void Int8RowsAvx2(const MatMulArgs& args, int64_t row_begin, int64_t row_end) {
  // Tiles of 2×4, 4×2, 4×1 (rows × tokens). One row × 8 tokens was slower at batch 8: each FMA
  // then loads its input afresh, from L2 once 8 token rows no longer fit L1.
  ForEachTile<2, 4, 4, Int8Tile>(args, row_begin, row_end);
}

void Nf4RowsAvx2(const MatMulArgs& args, int64_t row_begin, int64_t row_end) {
  // 1×4, 2×2, 4×1: with 4 tokens, 4 block sums + 4 accumulators + 4 decoded vectors + the
  // lookup tables already fill the registers.
  ForEachTile<1, 2, 4, Nf4Tile>(args, row_begin, row_end);
}

void Nf4InputOrderAvx2(const float* x, int64_t cols, int n_tokens, float* out) {
  for (int64_t begin = 0; begin < n_tokens * cols; begin += kNf4BlockSize) {
    for (int j = 0; j < kNf4BlockSize; ++j) out[begin + j] = x[begin + kNf4DecodeOrder[j]];
  }
}

}  // namespace sinkserve::cpu
