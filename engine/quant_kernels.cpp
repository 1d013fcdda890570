#include "engine/quant_kernels.h"

namespace sinkserve::cpu {

#if defined(__x86_64__)
void MatMulInt8Avx2(const Int8Rows& w, const float* bias, const float* x, int n_tokens, float* y,
                    int64_t row_begin, int64_t row_end);
void MatMulNf4Avx2(const Nf4Blocks& w, int64_t cols, const float* bias, const float* x,
                   int n_tokens, float* y, int64_t rows, int64_t row_begin, int64_t row_end);
#endif

namespace {

// bnb's dequantization: (q · absmax) · fp32(1/127); the kernels fold fp32(1/127)·absmax into
// one per-row scale applied to the integer-weighted sum.
constexpr float kInverse127 = 7.874015718698502e-3f;

bool HasAvx2() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

}  // namespace

void MatMulInt8Portable(const Int8Rows& w, const float* bias, const float* x, int n_tokens,
                        float* y, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int8_t* q = w.codes.data() + r * w.cols;
    const float scale = w.row_absmax[r] * kInverse127;
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.cols;
      float sum = 0.0f;
      for (int64_t k = 0; k < w.cols; ++k) sum += static_cast<float>(q[k]) * xt[k];
      y[t * w.rows + r] = sum * scale + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

void MatMulNf4Portable(const Nf4Blocks& w, int64_t cols, const float* bias, const float* x,
                       int n_tokens, float* y, int64_t rows, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * cols;
      float sum = 0.0f;
      for (int64_t k = 0; k < cols; k += kNf4BlockSize) {
        const int64_t first = r * cols + k;
        const float absmax = w.block_absmax[first / kNf4BlockSize];
        float block = 0.0f;
        for (int i = 0; i < kNf4BlockSize; ++i) {
          const uint8_t byte = w.codes[(first + i) / 2];
          block += kNf4Values[i % 2 == 0 ? byte >> 4 : byte & 0xf] * xt[k + i];
        }
        sum += block * absmax;
      }
      y[t * rows + r] = sum + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

void MatMulInt8(const Int8Rows& w, const float* bias, const float* x, int n_tokens, float* y,
                ThreadPool& pool) {
  pool.ParallelFor(w.rows, 64, [&](int64_t begin, int64_t end, int) {
#if defined(__x86_64__)
    if (HasAvx2()) return MatMulInt8Avx2(w, bias, x, n_tokens, y, begin, end);
#endif
    MatMulInt8Portable(w, bias, x, n_tokens, y, begin, end);
  });
}

void MatMulNf4(const Nf4Blocks& w, int64_t rows, int64_t cols, const float* bias, const float* x,
               int n_tokens, float* y, ThreadPool& pool) {
  pool.ParallelFor(rows, 64, [&](int64_t begin, int64_t end, int) {
#if defined(__x86_64__)
    if (HasAvx2()) return MatMulNf4Avx2(w, cols, bias, x, n_tokens, y, rows, begin, end);
#endif
    MatMulNf4Portable(w, cols, bias, x, n_tokens, y, rows, begin, end);
  });
}

}  // namespace sinkserve::cpu
