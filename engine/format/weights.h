// ModelWeights: the tensors of a GPT-NeoX model, as views in their stored width or quantized.
//
// This is the only place that knows HF tensor names (docs/numerics.md). Matrices stay in the dtype
// they were stored in (F32, F16 or BF16) and are converted inside the kernels, so a model
// takes the memory of its checkpoint, not of an fp32 copy; at load they may be converted to
// another width or quantized to int8 / NF4 (engine/format/quantize_weights.h). The small vectors
// (biases, LayerNorm parameters) are converted to fp32 once at load: < 0.1% of the bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/config.h"
#include "common/base/dtype.h"
#include "engine/format/quant.h"

namespace sinkserve {

class Checkpoint;

// How a matrix's elements are stored (docs/formats.md).
enum class QuantFormat : uint8_t {
  kNone,  // dense: rows·cols elements of `dtype` (F32, F16 or BF16) at `data`
  kInt8,  // `int8`: per-row absmax int8 codes (bitsandbytes SCB rows)
  kNf4,   // `nf4`: NF4 codes in blocks of 64, fp32 absmax per block, or double-quantized
          // absmax in `nf4_absmax` (then nf4->block_absmax is empty)
};

// A row-major [rows][cols] matrix, y = W·x (rows = outputs): a view of storage owned by
// ModelWeights (the mapped checkpoint, an owned buffer or a quantized struct). The quantized
// structs are engine/format/quant.h's, as they are: a device backend uploads them unchanged.
struct Matrix {
  DType dtype = DType::kF32;        // kNone: element type of `data`; kInt8: kI8; kNf4: kU8
  int64_t rows = 0;
  int64_t cols = 0;
  const std::byte* data = nullptr;  // kNone only: rows·cols elements of dtype
  QuantFormat quant = QuantFormat::kNone;
  const Int8Rows* int8 = nullptr;              // kInt8: codes [rows][cols], row_absmax [rows]
  const Nf4Blocks* nf4 = nullptr;              // kNf4: codes [rows·cols/2], absmax [rows·cols/64]
  const QuantizedAbsmax* nf4_absmax = nullptr;  // kNf4 with double quantization, else nullptr

  static Matrix Int8(const Int8Rows& q);
  // `absmax`: the double-quantized block absmax when q.block_absmax is empty, else nullptr.
  static Matrix Nf4(const Nf4Blocks& q, int64_t rows, int64_t cols,
                    const QuantizedAbsmax* absmax = nullptr);

  // The bytes the matrix occupies: elements, or codes plus every scale/statistic.
  size_t bytes() const;
  // What the view reads: two views of one tensor (tied embeddings) have the same storage.
  const void* storage() const;
  // out[0..cols) = row `row` in fp32: converted from its dtype, or dequantized exactly as
  // engine/format/quant.h dequantizes.
  void RowToFloat(int64_t row, float* out) const;
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

  // Keeps the memory the matrices point into alive: the mapped checkpoint, owned buffers
  // (converted or generated dense matrices) and the quantized matrices' structs.
  std::shared_ptr<const Checkpoint> checkpoint;
  std::vector<std::unique_ptr<std::byte[]>> owned;
  std::vector<std::unique_ptr<Int8Rows>> int8_storage;
  std::vector<std::unique_ptr<Nf4Blocks>> nf4_storage;
  std::vector<std::unique_ptr<QuantizedAbsmax>> nf4_absmax_storage;

  // Bytes of every distinct tensor as stored now (embed_out counted once when tied).
  uint64_t bytes() const;

  // Views the tensors of `checkpoint`, checking every shape and dtype against `config`.
  // Errors name the file and the tensor.
  static absl::StatusOr<ModelWeights> FromCheckpoint(std::shared_ptr<const Checkpoint> checkpoint,
                                                     const ModelConfig& config);
};

}  // namespace sinkserve
