// Int8 and NF4 weights × int8 activations with AVX-512 VNNI (engine/cpu/int8_activations.h).
// Compiled with the AVX-512 + VNNI flags; called only where cpu::CpuHasAvx512Vnni().
//
// vpdpbusd multiplies unsigned bytes by signed ones. The weights are made unsigned — int8
// codes w + 128 (one xor per 64 weights, shared by the tile's tokens), NF4 codes looked up in
// a table of kNf4Int8Values + 128 — and the activations stay signed, so each dword lane sums
// Σ_4 (w + 128)·x = Σ_4 w·x + 128·Σ_4 x. The correction −128·Σ_4 x depends only on the token,
// so it is computed when the activations are quantized (offset_sums) and starts the lane's
// accumulation: one load, no arithmetic instruction per weight or token. Each lane then holds
// its exact Σ_4 w·x (a single correction in lane 0 instead would leave lanes ~100× larger
// than the block sum, cancelling only after the fp32 scaling). The sign trick of the AVX2
// kernels costs an abs per weight vector and a masked negation per token and vector: 1.2×
// slower for batches of int8 weights (NOTES.md).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "engine/cpu/int8_activation_tiles.h"
#include "engine/cpu/int8_activations.h"
#include "engine/format/quant.h"

namespace sinkserve::cpu {
namespace {

// The lanes' corrections for block b of a token (`at` = token · blocks + b).
inline __m512i Correction(const QuantizedActivations& x, int64_t at) {
  return _mm512_loadu_si512(&x.offset_sums[at * (kActivationBlock / 4)]);
}

inline __m512i Codes(const QuantizedActivations& x, int64_t token, int64_t b) {
  return _mm512_loadu_si512(&x.codes[token * x.cols + b * kActivationBlock]);
}

// y = (Σ_b d_b · S_b) · (absmax · fp32(1/127)) + bias.
template <int kRows, int kTokens>
struct Int8Tile {
  static void Run(const Int8MatMulArgs& a, const int64_t* rows, int token) {
    const Int8Rows& w = *a.w->int8;
    const QuantizedActivations& x = *a.x;
    const int64_t cols = w.cols, blocks = cols / kActivationBlock;
    const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
    __m512 acc[kRows][kTokens];
    for (int i = 0; i < kRows; ++i)
      for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m512i xv[kTokens];
      for (int t = 0; t < kTokens; ++t) xv[t] = Codes(x, token + t, b);
      for (int i = 0; i < kRows; ++i) {
        const __m512i wu = _mm512_xor_si512(
            _mm512_loadu_si512(&w.codes[rows[i] * cols + b * kActivationBlock]), offset);
        for (int t = 0; t < kTokens; ++t) {
          const int64_t at = (token + t) * blocks + b;
          const __m512i sum = _mm512_dpbusd_epi32(Correction(x, at), wu, xv[t]);
          acc[i][t] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(x.scales[at]), acc[i][t]);
        }
      }
    }
    for (int i = 0; i < kRows; ++i) {
      const float scale = w.row_absmax[rows[i]] * kInverse127;
      const float bias = a.bias != nullptr ? a.bias[rows[i]] : 0.0f;
      for (int t = 0; t < kTokens; ++t) {
        a.y[(token + t) * w.rows + rows[i]] = _mm512_reduce_add_ps(acc[i][t]) * scale + bias;
      }
    }
  }
};

// y = (Σ_b (d_b · absmax_b) · S_b) · fp32(1/127) + bias. A block's 32 code bytes are
// broadcast to both halves of a zmm; the low half shifted right by 4 (per 16-bit word) and
// masked gives the high nibbles (even elements), the high half masked the low ones (odd
// elements), and one vpshufb maps the 64 nibbles through the table: the kEvenOdd order.
template <int kRows, int kTokens>
struct Nf4Tile {
  static void Run(const Int8MatMulArgs& a, const int64_t* rows, int token) {
    const Matrix& w = *a.w;
    const QuantizedActivations& x = *a.x;
    const int64_t cols = w.cols, blocks = cols / kActivationBlock;
    alignas(16) uint8_t table[16];
    for (int c = 0; c < 16; ++c) table[c] = static_cast<uint8_t>(kNf4Int8Values[c] + 128);
    const __m512i lut =
        _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(table)));
    const __m512i shifts = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_setzero_si256(), 1);
    const __m512i low_nibble = _mm512_set1_epi8(0x0f);
    __m512 acc[kRows][kTokens];
    for (int i = 0; i < kRows; ++i)
      for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m512i xv[kTokens];
      __m512 d[kTokens];
      for (int t = 0; t < kTokens; ++t) {
        xv[t] = Codes(x, token + t, b);
        d[t] = _mm512_set1_ps(x.scales[(token + t) * blocks + b]);
      }
      for (int i = 0; i < kRows; ++i) {
        const int64_t block = rows[i] * blocks + b;
        const __m512i codes = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(&w.nf4->codes[block * (kNf4BlockSize / 2)])));
        const __m512i wu = _mm512_shuffle_epi8(
            lut, _mm512_and_si512(_mm512_srlv_epi16(codes, shifts), low_nibble));
        const __m512 absmax =
            _mm512_set1_ps(w.nf4_absmax != nullptr ? DequantizeAbsmaxAt(*w.nf4_absmax, block)
                                                   : w.nf4->block_absmax[block]);
        for (int t = 0; t < kTokens; ++t) {
          const __m512i sum =
              _mm512_dpbusd_epi32(Correction(x, (token + t) * blocks + b), wu, xv[t]);
          acc[i][t] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d[t], absmax), acc[i][t]);
        }
      }
    }
    for (int i = 0; i < kRows; ++i) {
      const float bias = a.bias != nullptr ? a.bias[rows[i]] : 0.0f;
      for (int t = 0; t < kTokens; ++t) {
        a.y[(token + t) * w.rows + rows[i]] = _mm512_reduce_add_ps(acc[i][t]) * kInverse127 + bias;
      }
    }
  }
};

}  // namespace

void Int8WeightsInt8ActivationsVnni(const Int8MatMulArgs& a, int64_t begin, int64_t end) {
  int8_tiles::Rows<Int8Tile, 8, 4>(a, begin, end);
}

void Nf4WeightsInt8ActivationsVnni(const Int8MatMulArgs& a, int64_t begin, int64_t end) {
  int8_tiles::Rows<Nf4Tile, 8, 4>(a, begin, end);
}

}  // namespace sinkserve::cpu
