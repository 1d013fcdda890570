// Matrix products with quantized weights, dequantized in registers (never materialized in
// fp32): y[t][r] = bias[r] + Σ_k dequant(w)[r][k]·x[t][k], fp32 accumulation.
// Agreement with dequantize-then-multiply is fp32 rounding: |Δ| ≤ ~cols·2^-24·Σ|w·x|.
#pragma once

#include "engine/quant.h"
#include "engine/thread_pool.h"

namespace sinkserve::cpu {

// x: [n_tokens][w.cols], y: [n_tokens][w.rows], bias: [w.rows] or nullptr.
void MatMulInt8(const Int8Rows& w, const float* bias, const float* x, int n_tokens, float* y,
                ThreadPool& pool);
// The NF4 weight is [rows][cols] row-major with cols a multiple of kNf4BlockSize.
void MatMulNf4(const Nf4Blocks& w, int64_t rows, int64_t cols, const float* bias, const float* x,
               int n_tokens, float* y, ThreadPool& pool);

// Portable versions (the reference the SIMD ones are tested against).
void MatMulInt8Portable(const Int8Rows& w, const float* bias, const float* x, int n_tokens,
                        float* y, int64_t row_begin, int64_t row_end);
void MatMulNf4Portable(const Nf4Blocks& w, int64_t cols, const float* bias, const float* x,
                       int n_tokens, float* y, int64_t rows, int64_t row_begin, int64_t row_end);

}  // namespace sinkserve::cpu
