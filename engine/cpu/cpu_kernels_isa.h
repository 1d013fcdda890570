// Internal to the CPU kernels: the per-ISA implementations behind cpu::MatMul and the
// attention inner loops, chosen once at run time.
#pragma once

#include <cstdint>

#include "engine/format/weights.h"

namespace sinkserve::cpu {

struct MatMulArgs {
  const Matrix* w;     // [rows][cols], dense or quantized
  const float* bias;   // [rows] or nullptr
  const float* x;      // [n_tokens][cols]
  int n_tokens;
  float* y;            // [n_tokens][rows]
};

// Computes output rows [row_begin, row_end) for every token. The portable version takes any
// matrix (dense or quantized): it is the reference the SIMD kernels are tested against.
void MatMulRowsPortable(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
// scores[j] = scale · q·keys[j] for j < n; keys: [n][d].
void AttentionScoresPortable(const float* q, const float* keys, int n, int d, float scale,
                             float* scores);
// scores[j] = scale · q·R(rank j)·keys[j]: the first `rot` dims of each key rotated (NeoX
// rotate_half) with table row j ([cos rot][sin rot], stride 2·rot), the rest as stored.
void RotatedKeyScoresPortable(const float* q, const float* keys, int n, int d, int rot,
                              const float* table, float scale, float* scores);
// out[k] += Σ_j p[j]·values[j][k]; values: [n][d].
void WeightedSumPortable(const float* p, const float* values, int n, int d, float* out);
#if defined(__x86_64__)
void MatMulRowsAvx2(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
// Int8 and NF4 rows (engine/cpu/quant_kernels_avx2.cpp), dequantizing in registers. Nf4RowsAvx2
// needs cols % kNf4BlockSize == 0 and its input reordered by Nf4InputOrderAvx2 (x, out:
// [n_tokens][cols]) into the order in which it decodes a block's codes.
void Int8RowsAvx2(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
void Nf4RowsAvx2(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
void Nf4InputOrderAvx2(const float* x, int64_t cols, int n_tokens, float* out);
void AttentionScoresAvx2(const float* q, const float* keys, int n, int d, float scale,
                         float* scores);
void RotatedKeyScoresAvx2(const float* q, const float* keys, int n, int d, int rot,
                          const float* table, float scale, float* scores);
void WeightedSumAvx2(const float* p, const float* values, int n, int d, float* out);
// The AVX-512 rows (engine/cpu/cpu_kernels_avx512.cpp, quant_kernels_avx512.cpp); the
// attention loops of that path are the AVX2 ones (head_dim-long vectors, little to gain).
// Nf4RowsAvx512 needs cols % kNf4BlockSize == 0 and its input reordered by
// Nf4InputOrderAvx512.
void MatMulRowsAvx512(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
void Int8RowsAvx512(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
void Nf4RowsAvx512(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
void Nf4InputOrderAvx512(const float* x, int64_t cols, int n_tokens, float* out);
#endif

}  // namespace sinkserve::cpu
