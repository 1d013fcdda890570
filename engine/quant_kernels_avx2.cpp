// Int8 and NF4 matrix products with AVX2 + FMA; compiled with -mavx2 -mfma and called only
// after a run-time check (quant_kernels.cpp). Weights are widened/looked up in registers.
#include <immintrin.h>

#include <cstring>

#include "engine/avx2_helpers.h"
#include "engine/quant_kernels.h"

namespace sinkserve::cpu {
namespace {

constexpr float kInverse127 = 7.874015718698502e-3f;

// 8 int8 codes → 8 fp32 values.
inline __m256 LoadInt8x8(const int8_t* q) {
  int64_t bytes;
  std::memcpy(&bytes, q, 8);
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes)));
}

// 4 packed bytes → the 8 NF4 values they encode, in element order (high nibble first).
inline __m256 LoadNf4x8(const uint8_t* codes, __m256 table_low, __m256 table_high) {
  int32_t word;
  std::memcpy(&word, codes, 4);
  const __m128i bytes = _mm_cvtsi32_si128(word);
  // [b0 b0 b1 b1 b2 b2 b3 b3] widened to 32-bit lanes, then >> 4 on even lanes, & 0xf.
  const __m256i lanes = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(bytes, bytes));
  const __m256i nibbles = _mm256_and_si256(
      _mm256_srlv_epi32(lanes, _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0)), _mm256_set1_epi32(0xf));
  // Codes 0-7 from the low half of the table, 8-15 from the high half (bit 3 → sign → blend).
  const __m256 low = _mm256_permutevar8x32_ps(table_low, nibbles);
  const __m256 high = _mm256_permutevar8x32_ps(table_high, nibbles);
  return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(nibbles, 28)));
}

}  // namespace

void MatMulInt8Avx2(const Int8Rows& w, const float* bias, const float* x, int n_tokens, float* y,
                    int64_t row_begin, int64_t row_end) {
  const int64_t vector_cols = w.cols & ~int64_t{7};
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int8_t* q = w.codes.data() + r * w.cols;
    const float scale = w.row_absmax[r] * kInverse127;
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.cols;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t k = 0; k < vector_cols; k += 8) {
        acc = _mm256_fmadd_ps(LoadInt8x8(q + k), _mm256_loadu_ps(xt + k), acc);
      }
      float sum = HorizontalSum(acc);
      for (int64_t k = vector_cols; k < w.cols; ++k) sum += static_cast<float>(q[k]) * xt[k];
      y[t * w.rows + r] = sum * scale + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

void MatMulNf4Avx2(const Nf4Blocks& w, int64_t cols, const float* bias, const float* x,
                   int n_tokens, float* y, int64_t rows, int64_t row_begin, int64_t row_end) {
  const __m256 table_low = _mm256_loadu_ps(kNf4Values);
  const __m256 table_high = _mm256_loadu_ps(kNf4Values + 8);
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * cols;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t k = 0; k < cols; k += kNf4BlockSize) {
        const int64_t first = r * cols + k;
        const __m256 absmax = _mm256_set1_ps(w.block_absmax[first / kNf4BlockSize]);
        const uint8_t* codes = w.codes.data() + first / 2;
        for (int i = 0; i < kNf4BlockSize; i += 8) {
          const __m256 weights =
              _mm256_mul_ps(LoadNf4x8(codes + i / 2, table_low, table_high), absmax);
          acc = _mm256_fmadd_ps(weights, _mm256_loadu_ps(xt + k + i), acc);
        }
      }
      y[t * rows + r] = HorizontalSum(acc) + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

}  // namespace sinkserve::cpu
