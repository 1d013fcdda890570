// Int8 and NF4 weights × int8 activations with AVX2 (engine/cpu/int8_activations.h), for CPUs
// without AVX-512 VNNI. Compiled with -mavx2 -mfma; called only after a run-time check.
//
// vpmaddubsw multiplies unsigned bytes by signed ones and adds pairs into saturating int16:
// with |w| as the unsigned operand and x·sign(w) (vpsignb) as the signed one, each pair is at
// most 2·128·127 < 2^15, so nothing saturates; vpmaddwd by ones then adds pairs into int32.
// A 64-element block is two ymm halves, summed in int32 before the one conversion to fp32.
#include <immintrin.h>

#include "engine/cpu/avx2_helpers.h"
#include "engine/cpu/int8_activation_tiles.h"
#include "engine/cpu/int8_activations.h"
#include "engine/format/quant.h"

namespace sinkserve::cpu {
namespace {

// The int32 lanes of Σ w·x over a block given as two halves (w: signed codes).
inline __m256i BlockSum(const __m256i w[2], const __m256i abs_w[2], const int8_t* x) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i sum[2];
  for (int h = 0; h < 2; ++h) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * h));
    sum[h] = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w[h], _mm256_sign_epi8(xv, w[h])), ones);
  }
  return _mm256_add_epi32(sum[0], sum[1]);
}

// Accumulates block b of the tile's rows (their signed codes in w[i][2]) for every token:
// acc += fp32(S_b) · scale(i, d_b).
template <int kRows, int kTokens, class Scale>
inline void AccumulateBlock(const QuantizedActivations& x, int token, int64_t b,
                            const __m256i (&w)[kRows][2], Scale scale,
                            __m256 (&acc)[kRows][kTokens]) {
  const int64_t blocks = x.cols / kActivationBlock;
  for (int i = 0; i < kRows; ++i) {
    const __m256i abs_w[2] = {_mm256_abs_epi8(w[i][0]), _mm256_abs_epi8(w[i][1])};
    for (int t = 0; t < kTokens; ++t) {
      const int64_t at = (token + t) * blocks + b;
      const __m256i sum = BlockSum(w[i], abs_w, &x.codes[at * kActivationBlock]);
      acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(scale(i, x.scales[at])),
                                  acc[i][t]);
    }
  }
}

// y = (Σ_b d_b · S_b) · (absmax · fp32(1/127)) + bias.
template <int kRows, int kTokens>
struct Int8Tile {
  static void Run(const Int8MatMulArgs& a, const int64_t* rows, int token) {
    const Int8Rows& q = *a.w->int8;
    const int64_t cols = q.cols, blocks = cols / kActivationBlock;
    __m256 acc[kRows][kTokens];
    for (int i = 0; i < kRows; ++i)
      for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i w[kRows][2];
      for (int i = 0; i < kRows; ++i) {
        const int8_t* codes = &q.codes[rows[i] * cols + b * kActivationBlock];
        for (int h = 0; h < 2; ++h) {
          w[i][h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * h));
        }
      }
      AccumulateBlock<kRows, kTokens>(
          *a.x, token, b, w, [](int, float d) { return d; }, acc);
    }
    for (int i = 0; i < kRows; ++i) {
      const float scale = q.row_absmax[rows[i]] * kInverse127;
      const float bias = a.bias != nullptr ? a.bias[rows[i]] : 0.0f;
      for (int t = 0; t < kTokens; ++t) {
        a.y[(token + t) * q.rows + rows[i]] = HorizontalSum(acc[i][t]) * scale + bias;
      }
    }
  }
};

// y = (Σ_b (d_b · absmax_b) · S_b) · fp32(1/127) + bias. A block's 32 code bytes: high
// nibbles (even elements), then low nibbles (odd ones), each through vpshufb on
// kNf4Int8Values — the kEvenOdd order.
template <int kRows, int kTokens>
struct Nf4Tile {
  static void Run(const Int8MatMulArgs& a, const int64_t* rows, int token) {
    const Matrix& m = *a.w;
    const int64_t blocks = m.cols / kActivationBlock;
    const __m256i lut = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(kNf4Int8Values)));
    const __m256i low_nibble = _mm256_set1_epi8(0x0f);
    __m256 acc[kRows][kTokens];
    for (int i = 0; i < kRows; ++i)
      for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i w[kRows][2];
      float absmax[kRows];
      for (int i = 0; i < kRows; ++i) {
        const int64_t block = rows[i] * blocks + b;
        const __m256i codes = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(&m.nf4->codes[block * (kNf4BlockSize / 2)]));
        w[i][0] =
            _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(codes, 4), low_nibble));
        w[i][1] = _mm256_shuffle_epi8(lut, _mm256_and_si256(codes, low_nibble));
        absmax[i] = m.nf4_absmax != nullptr ? DequantizeAbsmaxAt(*m.nf4_absmax, block)
                                            : m.nf4->block_absmax[block];
      }
      AccumulateBlock<kRows, kTokens>(
          *a.x, token, b, w, [&](int i, float d) { return d * absmax[i]; }, acc);
    }
    for (int i = 0; i < kRows; ++i) {
      const float bias = a.bias != nullptr ? a.bias[rows[i]] : 0.0f;
      for (int t = 0; t < kTokens; ++t) {
        a.y[(token + t) * m.rows + rows[i]] = HorizontalSum(acc[i][t]) * kInverse127 + bias;
      }
    }
  }
};

}  // namespace

void Int8WeightsInt8ActivationsAvx2(const Int8MatMulArgs& a, int64_t begin, int64_t end) {
  int8_tiles::Rows<Int8Tile, 4, 1>(a, begin, end);
}

void Nf4WeightsInt8ActivationsAvx2(const Int8MatMulArgs& a, int64_t begin, int64_t end) {
  int8_tiles::Rows<Nf4Tile, 4, 1>(a, begin, end);
}

}  // namespace sinkserve::cpu
