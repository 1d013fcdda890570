// ModelWeights: the tensors of a GPT-NeoX model, as views in their stored width.
//
// This is the only place that knows HF tensor names (DESIGN §2). Matrices stay in the dtype
// they were stored in (F32, F16 or BF16) and are converted inside the kernels, so a model
// takes the memory of its checkpoint, not of an fp32 copy. The small vectors (biases,
// LayerNorm parameters) are converted to fp32 once at load: < 0.1% of the bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/dtype.h"
#include "engine/quant.h"

namespace sinkserve {

class Checkpoint;

// How a matrix's elements are held: dense in its dtype, or quantized (DESIGN §5).
enum class QuantFormat : uint8_t { kNone, kInt8, kNf4 };

// A row-major [rows][cols] matrix, y = W·x (rows = outputs): dense in its stored dtype, or
// quantized in one of the engine/quant.h formats.
struct Matrix {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const std::byte* data = nullptr;  // dense: rows·cols elements of dtype; owned by ModelWeights
  QuantFormat quant = QuantFormat::kNone;
  const Int8Rows* int8 = nullptr;   // kInt8
  const Nf4Blocks* nf4 = nullptr;   // kNf4
  const QuantizedAbsmax* nf4_absmax = nullptr;  // kNf4 with double-quantized absmax

  size_t bytes() const { return static_cast<size_t>(rows * cols) * DTypeSize(dtype); }
};

struct LayerWeights {
  std::vector<float> input_norm_weight, input_norm_bias;  // [H] LN before attention
  std::vector<float> post_norm_weight, post_norm_bias;    // [H] LN before the MLP
  Matrix qkv;                 // [3H][H], rows grouped per head: (q[d], k[d], v[d]) for head 0, ...
  std::vector<float> qkv_bias;  // [3H] (zeros when attention_bias is false)
  Matrix attn_out;            // [H][H] attention.dense
  std::vector<float> attn_out_bias;  // [H]
  Matrix mlp_up;              // [F][H] mlp.dense_h_to_4h
  std::vector<float> mlp_up_bias;    // [F]
  Matrix mlp_down;            // [H][F] mlp.dense_4h_to_h
  std::vector<float> mlp_down_bias;  // [H]
};

struct ModelWeights {
  Matrix embed_in;   // [V][H] gpt_neox.embed_in
  std::vector<LayerWeights> layers;  // [L]
  std::vector<float> final_norm_weight, final_norm_bias;  // [H]
  Matrix embed_out;  // [V][H] embed_out (aliases embed_in when tied)

  // Keeps the memory the matrices point into alive: the mapped checkpoint, or owned buffers.
  std::shared_ptr<const Checkpoint> checkpoint;
  std::vector<std::unique_ptr<std::byte[]>> owned;

  // Bytes of every distinct tensor (embed_out counted once when tied).
  uint64_t bytes() const;

  // Views the tensors of `checkpoint`, checking every shape and dtype against `config`.
  // Errors name the file and the tensor.
  static absl::StatusOr<ModelWeights> FromCheckpoint(std::shared_ptr<const Checkpoint> checkpoint,
                                                     const ModelConfig& config);
};

}  // namespace sinkserve
