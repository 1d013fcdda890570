// MatMul rows and attention inner loops with AVX2 + FMA + F16C. This file is compiled with
// -mavx2 -mfma -mf16c; cpu_kernels.cpp calls it only after checking the CPU supports those.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "common/base/half.h"
#include "engine/cpu/avx2_helpers.h"
#include "engine/cpu/cpu_kernels_isa.h"

namespace sinkserve::cpu {
namespace {

// Loads 8 consecutive weights of a row as fp32: the conversion happens in registers, so the
// weights are read from memory in their stored width.
template <DType kDType>
inline __m256 Load8(const std::byte* row, int64_t k) {
  if constexpr (kDType == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (kDType == DType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + k)));
  } else {
    const __m128i bits = _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
}

template <DType kDType>
inline float LoadScalar(const std::byte* row, int64_t k) {
  if constexpr (kDType == DType::kF32) {
    float value;  // memcpy: safetensors data need not be 4-byte aligned
    std::memcpy(&value, row + 4 * k, 4);
    return value;
  } else {
    uint16_t bits;
    std::memcpy(&bits, row + 2 * k, 2);
    return kDType == DType::kF16 ? F16ToFloat(bits) : Bf16ToFloat(bits);
  }
}

// A tile of kRows weight rows × kTokens tokens: kRows·kTokens independent FMA chains hide the
// FMA latency, and each weight vector loaded is used kTokens times.
template <DType kDType, int kRows, int kTokens>
inline void Tile(const std::byte* w, int64_t row_bytes, int64_t cols, const float* x,
                 int64_t x_stride, float* y, int64_t y_stride, int64_t row, const float* bias) {
  __m256 acc[kRows][kTokens];
  for (int i = 0; i < kRows; ++i)
    for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm256_setzero_ps();
  const std::byte* rows[kRows];
  for (int i = 0; i < kRows; ++i) rows[i] = w + (row + i) * row_bytes;
  const int64_t vector_cols = cols & ~int64_t{7};
  for (int64_t k = 0; k < vector_cols; k += 8) {
    __m256 xv[kTokens];
    for (int t = 0; t < kTokens; ++t) xv[t] = _mm256_loadu_ps(x + t * x_stride + k);
    for (int i = 0; i < kRows; ++i) {
      if constexpr (kTokens == 1) {
        // Decode is memory-bound, and 16-byte loads of 8 rows keep too few lines in flight:
        // each row's line 1 KB ahead is asked for once per 64 bytes (160m fp16 decode, two
        // threads: 68.6 → 90.4 tok/s).
        if ((k * static_cast<int64_t>(DTypeSize(kDType))) % 64 == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(rows[i]) + k * DTypeSize(kDType) + 1024,
                       _MM_HINT_T0);
        }
      }
      const __m256 wv = Load8<kDType>(rows[i], k);
      for (int t = 0; t < kTokens; ++t) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int t = 0; t < kTokens; ++t) {
      float sum = HorizontalSum(acc[i][t]);
      for (int64_t k = vector_cols; k < cols; ++k) {
        sum += LoadScalar<kDType>(rows[i], k) * x[t * x_stride + k];
      }
      y[t * y_stride + row + i] = sum + (bias != nullptr ? bias[row + i] : 0.0f);
    }
  }
}

template <DType kDType, int kRows>
inline void RowsAllTokens(const MatMulArgs& a, int64_t row) {
  const int64_t row_bytes = a.w->cols * static_cast<int64_t>(DTypeSize(kDType));
  const std::byte* w = a.w->data;
  int t = 0;
  for (; t + 2 <= a.n_tokens; t += 2) {
    Tile<kDType, kRows, 2>(w, row_bytes, a.w->cols, a.x + t * a.w->cols, a.w->cols,
                           a.y + t * a.w->rows, a.w->rows, row, a.bias);
  }
  if (t < a.n_tokens) {
    Tile<kDType, kRows, 1>(w, row_bytes, a.w->cols, a.x + t * a.w->cols, a.w->cols,
                           a.y + t * a.w->rows, a.w->rows, row, a.bias);
  }
}

template <DType kDType>
void Rows(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  int64_t row = row_begin;
  if (a.n_tokens == 1) {
    // Batch 1: 8 rows in flight keep more loads outstanding (the step is memory-bound).
    const int64_t row_bytes = a.w->cols * static_cast<int64_t>(DTypeSize(kDType));
    for (; row + 8 <= row_end; row += 8) {
      Tile<kDType, 8, 1>(a.w->data, row_bytes, a.w->cols, a.x, a.w->cols, a.y, a.w->rows, row,
                         a.bias);
    }
  }
  for (; row + 4 <= row_end; row += 4) RowsAllTokens<kDType, 4>(a, row);
  for (; row < row_end; ++row) RowsAllTokens<kDType, 1>(a, row);
}

}  // namespace

void MatMulRowsAvx2(const MatMulArgs& args, int64_t row_begin, int64_t row_end) {
  switch (args.w->dtype) {
    case DType::kF32:
      return Rows<DType::kF32>(args, row_begin, row_end);
    case DType::kF16:
      return Rows<DType::kF16>(args, row_begin, row_end);
    case DType::kBF16:
      return Rows<DType::kBF16>(args, row_begin, row_end);
    default:
      return;  // weights are validated to be F32/F16/BF16 at load
  }
}

void AttentionScoresAvx2(const float* q, const float* keys, int n, int d, float scale,
                         float* scores) {
  const int vector_d = d & ~7;
  for (int j = 0; j < n; ++j) {
    const float* key = keys + static_cast<int64_t>(j) * d;
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < vector_d; k += 8) {
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + k), _mm256_loadu_ps(key + k), acc);
    }
    float dot = HorizontalSum(acc);
    for (int k = vector_d; k < d; ++k) dot += q[k] * key[k];
    scores[j] = dot * scale;
  }
}

void RotatedKeyScoresAvx2(const float* q, const float* keys, int n, int d, int rot,
                          const float* table, float scale, float* scores) {
  const int half = rot / 2;
  const int vector_half = half & ~7;
  const int pass_begin = rot;
  const int vector_pass_end = rot + ((d - rot) & ~7);
  for (int j = 0; j < n; ++j) {
    const float* key = keys + static_cast<int64_t>(j) * d;
    const float* cos = table + static_cast<int64_t>(j) * 2 * rot;
    const float* sin = cos + rot;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < vector_half; i += 8) {
      const __m256 k1 = _mm256_loadu_ps(key + i), k2 = _mm256_loadu_ps(key + i + half);
      const __m256 first = _mm256_fmsub_ps(k1, _mm256_loadu_ps(cos + i),
                                           _mm256_mul_ps(k2, _mm256_loadu_ps(sin + i)));
      const __m256 second = _mm256_fmadd_ps(k2, _mm256_loadu_ps(cos + i + half),
                                            _mm256_mul_ps(k1, _mm256_loadu_ps(sin + i + half)));
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), first, acc);
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + half), second, acc);
    }
    for (int i = pass_begin; i < vector_pass_end; i += 8) {
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(key + i), acc);
    }
    float dot = HorizontalSum(acc);
    for (int i = vector_half; i < half; ++i) {
      const float k1 = key[i], k2 = key[i + half];
      dot += q[i] * (k1 * cos[i] - k2 * sin[i]);
      dot += q[i + half] * (k2 * cos[i + half] + k1 * sin[i + half]);
    }
    for (int i = vector_pass_end; i < d; ++i) dot += q[i] * key[i];
    scores[j] = dot * scale;
  }
}

namespace {

// out[k0, k0 + 8·kVectors) += Σ_j p[j]·values[j][...]: one pass over the value rows in order,
// kVectors accumulators held in registers. Each element sums in j order, as a scalar loop would.
template <int kVectors>
void WeightedSumBlock(const float* p, const float* values, int n, int d, float* out) {
  __m256 acc[kVectors];
  for (int v = 0; v < kVectors; ++v) acc[v] = _mm256_loadu_ps(out + 8 * v);
  for (int j = 0; j < n; ++j) {
    const __m256 weight = _mm256_set1_ps(p[j]);
    const float* row = values + static_cast<int64_t>(j) * d;
    for (int v = 0; v < kVectors; ++v) {
      acc[v] = _mm256_fmadd_ps(weight, _mm256_loadu_ps(row + 8 * v), acc[v]);
    }
  }
  for (int v = 0; v < kVectors; ++v) _mm256_storeu_ps(out + 8 * v, acc[v]);
}

}  // namespace

void WeightedSumAvx2(const float* p, const float* values, int n, int d, float* out) {
  using Block = void (*)(const float*, const float*, int, int, float*);
  static constexpr Block kBlocks[] = {WeightedSumBlock<1>, WeightedSumBlock<2>, WeightedSumBlock<3>,
                                      WeightedSumBlock<4>, WeightedSumBlock<5>, WeightedSumBlock<6>,
                                      WeightedSumBlock<7>, WeightedSumBlock<8>};
  const int vector_d = d & ~7;
  for (int k = 0; k < vector_d;) {  // blocks of up to 64 columns (8 accumulators)
    const int vectors = std::min(8, (vector_d - k) / 8);
    kBlocks[vectors - 1](p, values + k, n, d, out + k);
    k += 8 * vectors;
  }
  for (int k = vector_d; k < d; ++k) {
    float sum = out[k];
    for (int j = 0; j < n; ++j) sum += p[j] * values[static_cast<int64_t>(j) * d + k];
    out[k] = sum;
  }
}

}  // namespace sinkserve::cpu
