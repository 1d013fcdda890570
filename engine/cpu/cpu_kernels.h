// CPU kernels of the GPT-NeoX forward, fp32 arithmetic on weights in their stored width.
//
// The CPU backend is the oracle every other backend is tested against (docs/conventions.md §4):
// these functions favour exactness first (fp32 accumulation, double for LayerNorm statistics), then
// speed (AVX-512 or AVX2 kernels chosen at run time, rows split across the thread pool). Each
// kernel takes the CpuIsa to run (cpu_isa.h; kAuto: the best this CPU has); callers pass only isas
// CpuSupports.
#pragma once

#include <cstdint>
#include <vector>

#include "common/base/thread_pool.h"
#include "engine/cpu/cpu_isa.h"
#include "engine/format/config.h"
#include "engine/format/weights.h"

namespace sinkserve::cpu {

// y[t][r] = bias[r] + Σ_k w[r][k]·x[t][k] for t < n_tokens, w dense (converted in registers)
// or int8 / NF4 (dequantized in registers; never written out in fp32).
// x: [n_tokens][w.cols] fp32, y: [n_tokens][w.rows] fp32, bias: [w.rows] or nullptr.
// Reads the weights once for all tokens (they are processed in register blocks per row tile),
// which is what makes batched decode cheaper than n separate steps. Row t of y does not depend
// on the other rows of x, bit for bit (batched steps equal single ones).
void MatMul(const Matrix& w, const float* bias, const float* x, int n_tokens, float* y,
            ThreadPool& pool, CpuIsa isa = CpuIsa::kAuto);

// The portable implementation, always available, any format: the row converted or dequantized
// to fp32 (Matrix::RowToFloat), then dot products. Tests compare the SIMD paths against it.
void MatMulReference(const Matrix& w, const float* bias, const float* x, int n_tokens, float* y);

// out[i] = w[i]·(x[i] − mean)/sqrt(var + eps) + b[i], statistics over `dim` (biased variance).
void LayerNorm(const float* x, const float* weight, const float* bias, int dim, float eps,
               float* out);

// In place, elementwise.
void Gelu(Activation activation, float* x, int64_t n);

// out[0..cols) = table[row] in fp32 (converted or dequantized).
void EmbeddingRow(const Matrix& table, int64_t row, float* out);

// Attention inner loops over one head's contiguous keys/values ([n][d] fp32):
// scores[j] = scale · q·keys[j];  out[k] += Σ_j p[j]·values[j][k].
void AttentionScores(const float* q, const float* keys, int n, int d, float scale, float* scores,
                     CpuIsa isa = CpuIsa::kAuto);
void WeightedSum(const float* p, const float* values, int n, int d, float* out,
                 CpuIsa isa = CpuIsa::kAuto);
// Scores against keys stored un-rotated (the streaming cache): key j is rotated at the
// position whose cos/sin are table row j ([cos rot][sin rot], stride 2·rot) inside the dot
// product, without writing the rotated key anywhere.
void RotatedKeyScores(const float* q, const float* keys, int n, int d, int rot,
                      const float* table, float scale, float* scores, CpuIsa isa = CpuIsa::kAuto);

// Rotary position table: cos/sin of position·inv_freq, computed in fp32 exactly as HF does
// (inv_freq = 1 / base^(2i/rotary_ndims)). Each row holds rotary_ndims values: the half-width
// frequencies repeated twice (HF's cat(freqs, freqs)).
class RotaryTable {
 public:
  RotaryTable(int rotary_ndims, double base);
  int rotary_ndims() const { return rotary_ndims_; }
  // Writes cos and sin for `position` into [rotary_ndims] arrays.
  void Compute(int64_t position, float* cos, float* sin) const;

 private:
  int rotary_ndims_;
  std::vector<float> inv_freq_;  // [rotary_ndims / 2]
};

// NeoX rotate_half on the first rotary_ndims dims of one head vector, in place:
// x[i] ← x[i]·cos[i] − x[i+h]·sin[i],  x[i+h] ← x[i+h]·cos[i+h] + x[i]·sin[i+h]  (h = ndims/2).
void ApplyRotary(float* x, int rotary_ndims, const float* cos, const float* sin);

}  // namespace sinkserve::cpu
