#include "engine/cpu/cpu_kernels.h"

#include <cmath>
#include <vector>

#include "engine/cpu/cpu_kernels_isa.h"

namespace sinkserve::cpu {
namespace {

using RowsFunction = void (*)(const MatMulArgs&, int64_t, int64_t);

struct Isa {
  RowsFunction rows;       // dense F32/F16/BF16
  RowsFunction int8_rows;
  RowsFunction nf4_rows;   // rows of a matrix with cols % kNf4BlockSize == 0
  // Reorders each token's input for nf4_rows (nullptr: it reads the input as it is).
  void (*nf4_input_order)(const float* x, int64_t cols, int n_tokens, float* out);
  void (*scores)(const float*, const float*, int, int, float, float*);
  void (*weighted_sum)(const float*, const float*, int, int, float*);
  void (*rotated_scores)(const float*, const float*, int, int, int, const float*, float, float*);
};

const Isa kPortableKernels = {MatMulRowsPortable,      MatMulRowsPortable,
                              MatMulRowsPortable,      nullptr,
                              AttentionScoresPortable, WeightedSumPortable,
                              RotatedKeyScoresPortable};
#if defined(__x86_64__)
const Isa kAvx2Kernels = {MatMulRowsAvx2,      Int8RowsAvx2,    Nf4RowsAvx2,
                          Nf4InputOrderAvx2,   AttentionScoresAvx2, WeightedSumAvx2,
                          RotatedKeyScoresAvx2};
const Isa kAvx512Kernels = {MatMulRowsAvx512,    Int8RowsAvx512,  Nf4RowsAvx512,
                            Nf4InputOrderAvx512, AttentionScoresAvx2, WeightedSumAvx2,
                            RotatedKeyScoresAvx2};
#endif

const Isa& Kernels(CpuIsa isa) {
  switch (ResolveCpuIsa(isa)) {
#if defined(__x86_64__)
    case CpuIsa::kAvx512:
      return kAvx512Kernels;
    case CpuIsa::kAvx2:
      return kAvx2Kernels;
#endif
    default:
      return kPortableKernels;
  }
}

}  // namespace

void MatMulRowsPortable(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  // The definition itself: the row in fp32 (converted or dequantized), then dot products.
  const int64_t cols = a.w->cols;
  thread_local std::vector<float> row_values;
  row_values.resize(cols);
  for (int64_t row = row_begin; row < row_end; ++row) {
    a.w->RowToFloat(row, row_values.data());
    for (int t = 0; t < a.n_tokens; ++t) {
      const float* x = a.x + t * cols;
      float sum = 0.0f;
      for (int64_t k = 0; k < cols; ++k) sum += row_values[k] * x[k];
      a.y[t * a.w->rows + row] = sum + (a.bias != nullptr ? a.bias[row] : 0.0f);
    }
  }
}

void MatMul(const Matrix& w, const float* bias, const float* x, int n_tokens, float* y,
            ThreadPool& pool, CpuIsa cpu_isa) {
  const Isa& isa = Kernels(cpu_isa);
  MatMulArgs args{&w, bias, x, n_tokens, y};
  RowsFunction rows = isa.rows;
  if (w.quant == QuantFormat::kInt8) rows = isa.int8_rows;
  if (w.quant == QuantFormat::kNf4) {
    // The SIMD NF4 kernel needs blocks aligned with rows (every Pythia width is a multiple
    // of 64); other shapes take the portable path.
    const bool aligned = w.cols % kNf4BlockSize == 0;
    rows = aligned ? isa.nf4_rows : MatMulRowsPortable;
    if (aligned && isa.nf4_input_order != nullptr) {
      thread_local std::vector<float> ordered;
      ordered.resize(static_cast<size_t>(n_tokens) * w.cols);
      isa.nf4_input_order(x, w.cols, n_tokens, ordered.data());
      args.x = ordered.data();
    }
  }
  // Chunks of 64 rows (a multiple of the 4-row tile): ≥ 48 KB of weights each, so claiming a
  // chunk costs nothing next to reading it, and a slow thread holds back little. The chunking
  // never changes a row's arithmetic: each (row, token) is one accumulation in a fixed order,
  // whatever the tile, the batch size or the thread — so batched steps equal single ones.
  pool.ParallelFor(w.rows, 64, [&](int64_t begin, int64_t end, int) { rows(args, begin, end); });
}

void MatMulReference(const Matrix& w, const float* bias, const float* x, int n_tokens,
                     float* y) {
  MatMulRowsPortable(MatMulArgs{&w, bias, x, n_tokens, y}, 0, w.rows);
}

void AttentionScoresPortable(const float* q, const float* keys, int n, int d, float scale,
                             float* scores) {
  for (int j = 0; j < n; ++j) {
    const float* key = keys + static_cast<int64_t>(j) * d;
    float dot = 0.0f;
    for (int k = 0; k < d; ++k) dot += q[k] * key[k];
    scores[j] = dot * scale;
  }
}

void WeightedSumPortable(const float* p, const float* values, int n, int d, float* out) {
  for (int j = 0; j < n; ++j) {
    const float* value = values + static_cast<int64_t>(j) * d;
    for (int k = 0; k < d; ++k) out[k] += p[j] * value[k];
  }
}

void RotatedKeyScoresPortable(const float* q, const float* keys, int n, int d, int rot,
                              const float* table, float scale, float* scores) {
  const int half = rot / 2;
  for (int j = 0; j < n; ++j) {
    const float* key = keys + static_cast<int64_t>(j) * d;
    const float* cos = table + static_cast<int64_t>(j) * 2 * rot;
    const float* sin = cos + rot;
    float dot = 0.0f;
    for (int i = 0; i < half; ++i) {
      const float k1 = key[i], k2 = key[i + half];
      dot += q[i] * (k1 * cos[i] - k2 * sin[i]);
      dot += q[i + half] * (k2 * cos[i + half] + k1 * sin[i + half]);
    }
    for (int i = rot; i < d; ++i) dot += q[i] * key[i];
    scores[j] = dot * scale;
  }
}

void RotatedKeyScores(const float* q, const float* keys, int n, int d, int rot,
                      const float* table, float scale, float* scores, CpuIsa isa) {
  Kernels(isa).rotated_scores(q, keys, n, d, rot, table, scale, scores);
}

void AttentionScores(const float* q, const float* keys, int n, int d, float scale,
                     float* scores, CpuIsa isa) {
  Kernels(isa).scores(q, keys, n, d, scale, scores);
}

void WeightedSum(const float* p, const float* values, int n, int d, float* out, CpuIsa isa) {
  Kernels(isa).weighted_sum(p, values, n, d, out);
}

void LayerNorm(const float* x, const float* weight, const float* bias, int dim, float eps,
               float* out) {
  // Statistics in double: the result is the exactly-rounded fp32 LayerNorm to within an ulp,
  // which is what torch's fp32 kernel approximates too.
  double sum = 0.0;
  for (int i = 0; i < dim; ++i) sum += x[i];
  const double mean = sum / dim;
  double squares = 0.0;
  for (int i = 0; i < dim; ++i) {
    const double centered = x[i] - mean;
    squares += centered * centered;
  }
  const float inv_std = static_cast<float>(1.0 / std::sqrt(squares / dim + eps));
  const float mean_f = static_cast<float>(mean);
  for (int i = 0; i < dim; ++i) out[i] = (x[i] - mean_f) * inv_std * weight[i] + bias[i];
}

void Gelu(Activation activation, float* x, int64_t n) {
  if (activation == Activation::kActivationGeluErf) {
    for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
  } else {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i];
      x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
    }
  }
}

void EmbeddingRow(const Matrix& table, int64_t row, float* out) { table.RowToFloat(row, out); }

RotaryTable::RotaryTable(int rotary_ndims, double base)
    : rotary_ndims_(rotary_ndims), inv_freq_(rotary_ndims / 2) {
  // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32.
  for (int i = 0; i < rotary_ndims / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_ndims);
    inv_freq_[i] = 1.0f / std::pow(static_cast<float>(base), exponent);
  }
}

void RotaryTable::Compute(int64_t position, float* cos, float* sin) const {
  const int half = rotary_ndims_ / 2;
  const float p = static_cast<float>(position);
  for (int i = 0; i < half; ++i) {
    const float angle = p * inv_freq_[i];
    cos[i] = cos[i + half] = std::cos(angle);
    sin[i] = sin[i + half] = std::sin(angle);
  }
}

void ApplyRotary(float* x, int rotary_ndims, const float* cos, const float* sin) {
  const int half = rotary_ndims / 2;
  for (int i = 0; i < half; ++i) {
    const float x1 = x[i];
    const float x2 = x[i + half];
    x[i] = x1 * cos[i] - x2 * sin[i];
    x[i + half] = x2 * cos[i + half] + x1 * sin[i + half];
  }
}

}  // namespace sinkserve::cpu
