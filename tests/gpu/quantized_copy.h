// Quantized and dequantized copies of a model's weights, for the GPU tests and benchmark: the
// quantized copy feeds the CUDA backend, the dequantized fp32 copy feeds the CPU reference, so
// the two compute the same function and differ only by kernel arithmetic.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "engine/half.h"
#include "engine/quant.h"
#include "engine/thread_pool.h"
#include "engine/weights.h"

namespace sinkserve::testing {

inline std::vector<float> MatrixToFloat(const Matrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
  for (size_t i = 0; i < out.size(); ++i) {
    if (m.dtype == DType::kF32) {
      std::memcpy(&out[i], m.data + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, m.data + 2 * i, 2);
      out[i] = m.dtype == DType::kF16 ? F16ToFloat(bits) : Bf16ToFloat(bits);
    }
  }
  return out;
}

// A ModelWeights whose block matrices are quantized; the embeddings and vectors are shared
// with `source`, which must outlive it.
struct QuantizedCopy {
  ModelWeights weights;
  std::deque<Int8Rows> int8;
  std::deque<Nf4Blocks> nf4;
  std::deque<QuantizedAbsmax> absmax;
  std::deque<std::vector<float>> dense;  // fp32 dequantized matrices (DequantizedCopy)
};

inline void CopyShared(const ModelWeights& source, ModelWeights* out) {
  out->embed_in = source.embed_in;
  out->embed_out = source.embed_out;
  out->layers = source.layers;
  out->final_norm_weight = source.final_norm_weight;
  out->final_norm_bias = source.final_norm_bias;
  out->checkpoint = source.checkpoint;
}

inline std::unique_ptr<QuantizedCopy> Quantize(const ModelWeights& source, QuantFormat format,
                                               bool double_quant, ThreadPool& pool) {
  auto copy = std::make_unique<QuantizedCopy>();
  CopyShared(source, &copy->weights);
  std::vector<Matrix*> matrices;
  for (LayerWeights& layer : copy->weights.layers) {
    for (Matrix* m : {&layer.qkv, &layer.attn_out, &layer.mlp_up, &layer.mlp_down}) {
      matrices.push_back(m);
    }
  }
  // Slots first (deque elements never move), then fill them in parallel.
  for (size_t i = 0; i < matrices.size(); ++i) {
    if (format == QuantFormat::kInt8) copy->int8.emplace_back();
    if (format == QuantFormat::kNf4) copy->nf4.emplace_back();
    if (format == QuantFormat::kNf4 && double_quant) copy->absmax.emplace_back();
  }
  pool.ParallelFor(static_cast<int64_t>(matrices.size()), 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      Matrix& m = *matrices[i];
      const std::vector<float> w = MatrixToFloat(m);
      m.quant = format;
      if (format == QuantFormat::kInt8) {
        copy->int8[i] = QuantizeInt8Rows(w, m.rows, m.cols);
        m.int8 = &copy->int8[i];
      } else {
        copy->nf4[i] = QuantizeNf4(w);
        m.nf4 = &copy->nf4[i];
        if (double_quant) {
          copy->absmax[i] = DoubleQuantize(copy->nf4[i].block_absmax);
          m.nf4_absmax = &copy->absmax[i];
        }
      }
      m.data = nullptr;
    }
  });
  return copy;
}

// fp32 dense weights equal to dequantize(quantized) — what the quantized kernels must compute.
inline std::unique_ptr<QuantizedCopy> Dequantize(const ModelWeights& quantized) {
  auto copy = std::make_unique<QuantizedCopy>();
  CopyShared(quantized, &copy->weights);
  for (LayerWeights& layer : copy->weights.layers) {
    for (Matrix* m : {&layer.qkv, &layer.attn_out, &layer.mlp_up, &layer.mlp_down}) {
      std::vector<float>& dense = copy->dense.emplace_back(static_cast<size_t>(m->rows * m->cols));
      if (m->quant == QuantFormat::kInt8) {
        DequantizeInt8Rows(*m->int8, dense);
      } else if (m->nf4_absmax != nullptr) {
        Nf4Blocks blocks = *m->nf4;
        DequantizeAbsmax(*m->nf4_absmax, blocks.block_absmax);
        DequantizeNf4(blocks, dense);
      } else {
        DequantizeNf4(*m->nf4, dense);
      }
      *m = Matrix{DType::kF32, m->rows, m->cols, reinterpret_cast<const std::byte*>(dense.data())};
    }
  }
  return copy;
}

}  // namespace sinkserve::testing
