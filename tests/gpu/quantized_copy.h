// A dequantized fp32 copy of a model's weights, for the GPU tests: the quantized model feeds the
// CUDA backend, this copy feeds the CPU reference, so the two compute the same function and
// differ only by kernel arithmetic.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "engine/format/weights.h"

namespace sinkserve::testing {

struct DequantizedCopy {
  ModelWeights weights;  // block matrices point into `dense`; the rest is shared with the source
  std::deque<std::vector<float>> dense;
};

// fp32 dense weights equal to dequantize(quantized), which must outlive the copy.
inline std::unique_ptr<DequantizedCopy> Dequantize(const ModelWeights& quantized) {
  auto copy = std::make_unique<DequantizedCopy>();
  ModelWeights& w = copy->weights;
  w.embed_in = quantized.embed_in;
  w.embed_out = quantized.embed_out;
  w.layers = quantized.layers;
  w.final_norm_weight = quantized.final_norm_weight;
  w.final_norm_bias = quantized.final_norm_bias;
  for (LayerWeights& layer : w.layers) {
    for (Matrix* m : {&layer.qkv, &layer.attn_out, &layer.mlp_up, &layer.mlp_down}) {
      std::vector<float>& dense = copy->dense.emplace_back(static_cast<size_t>(m->rows * m->cols));
      for (int64_t row = 0; row < m->rows; ++row) m->RowToFloat(row, &dense[row * m->cols]);
      *m = Matrix{DType::kF32, m->rows, m->cols, reinterpret_cast<const std::byte*>(dense.data())};
    }
  }
  return copy;
}

}  // namespace sinkserve::testing
