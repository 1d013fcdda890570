#include "engine/format/weights.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/half.h"
#include "engine/format/safetensors.h"
#include "common/base/status_macros.h"

namespace sinkserve {
namespace {

// Finds a tensor and checks its shape and dtype. Errors name the file, the tensor and what
// was expected, so a mismatched checkpoint is diagnosed without a debugger.
class TensorFinder {
 public:
  explicit TensorFinder(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}

  absl::StatusOr<const TensorInfo*> Get(const std::string& name,
                                        std::vector<int64_t> expected_shape) const {
    const TensorInfo* info = checkpoint_.Find(name);
    if (info == nullptr) {
      return absl::NotFoundError(absl::StrCat(checkpoint_.dir(), ": tensor ", name,
                                              " is missing from the checkpoint"));
    }
    if (info->dtype != DType::kF32 && info->dtype != DType::kF16 && info->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(info->file, ": tensor ", name, " has dtype ",
                                                     std::string(DTypeName(info->dtype)),
                                                     "; weights must be F32, F16 or BF16"));
    }
    if (info->shape != expected_shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          info->file, ": tensor ", name, " has shape [", absl::StrJoin(info->shape, ", "),
          "] but config.json implies [", absl::StrJoin(expected_shape, ", "), "]"));
    }
    return info;
  }

  absl::StatusOr<Matrix> GetMatrix(const std::string& name, int64_t rows, int64_t cols) const {
    absl::StatusOr<const TensorInfo*> info = Get(name, {rows, cols});
    if (!info.ok()) return info.status();
    return Matrix{(*info)->dtype, rows, cols, (*info)->data};
  }

  // Vectors are small: converted to fp32 once.
  absl::StatusOr<std::vector<float>> GetVector(const std::string& name, int64_t size) const {
    absl::StatusOr<const TensorInfo*> info = Get(name, {size});
    if (!info.ok()) return info.status();
    std::vector<float> values(size);
    Matrix{(*info)->dtype, 1, size, (*info)->data}.RowToFloat(0, values.data());
    return values;
  }

 private:
  const Checkpoint& checkpoint_;
};


}  // namespace

Matrix Matrix::Int8(const Int8Rows& q) {
  Matrix m{DType::kI8, q.rows, q.cols};
  m.quant = QuantFormat::kInt8;
  m.int8 = &q;
  return m;
}

Matrix Matrix::Nf4(const Nf4Blocks& q, int64_t rows, int64_t cols, const QuantizedAbsmax* absmax) {
  Matrix m{DType::kU8, rows, cols};
  m.quant = QuantFormat::kNf4;
  m.nf4 = &q;
  m.nf4_absmax = absmax;
  return m;
}

size_t Matrix::bytes() const {
  switch (quant) {
    case QuantFormat::kNone:
      return static_cast<size_t>(rows * cols) * DTypeSize(dtype);
    case QuantFormat::kInt8:
      return int8->codes.size() + int8->row_absmax.size() * sizeof(float);
    case QuantFormat::kNf4: {
      size_t total = nf4->codes.size() + nf4->block_absmax.size() * sizeof(float);
      if (nf4_absmax != nullptr) {
        total += nf4_absmax->codes.size() + nf4_absmax->block_scale.size() * sizeof(float) +
                 sizeof(nf4_absmax->offset);
      }
      return total;
    }
  }
  return 0;  // unreachable for valid enumerators
}

const void* Matrix::storage() const {
  switch (quant) {
    case QuantFormat::kNone:
      return data;
    case QuantFormat::kInt8:
      return int8;
    case QuantFormat::kNf4:
      return nf4;
  }
  return nullptr;  // unreachable for valid enumerators
}

void Matrix::RowToFloat(int64_t row, float* out) const {
  switch (quant) {
    case QuantFormat::kNone: {
      const size_t width = DTypeSize(dtype);
      const std::byte* at = data + static_cast<size_t>(row * cols) * width;
      for (int64_t k = 0; k < cols; ++k, at += width) {
        if (dtype == DType::kF32) {
          std::memcpy(&out[k], at, 4);
        } else {
          uint16_t bits;
          std::memcpy(&bits, at, 2);
          out[k] = dtype == DType::kF16 ? F16ToFloat(bits) : Bf16ToFloat(bits);
        }
      }
      return;
    }
    case QuantFormat::kInt8:
      for (int64_t k = 0; k < cols; ++k) {
        out[k] = DequantizeInt8(int8->codes[row * cols + k], int8->row_absmax[row]);
      }
      return;
    case QuantFormat::kNf4:
      // A row need not start at a block boundary (cols % 64 != 0): index blocks by element.
      for (int64_t i = row * cols; i < (row + 1) * cols; ++i) {
        const int64_t block = i / kNf4BlockSize;
        const float absmax = nf4_absmax != nullptr ? DequantizeAbsmaxAt(*nf4_absmax, block)
                                                   : nf4->block_absmax[block];
        out[i - row * cols] = kNf4Values[Nf4CodeAt(nf4->codes.data(), i)] * absmax;
      }
      return;
  }
}

uint64_t ModelWeights::bytes() const {
  uint64_t total = embed_in.bytes();
  if (embed_out.storage() != embed_in.storage()) total += embed_out.bytes();
  auto vector_bytes = [](const std::vector<float>& v) { return v.size() * sizeof(float); };
  for (const LayerWeights& layer : layers) {
    total += layer.qkv.bytes() + layer.attn_out.bytes() + layer.mlp_up.bytes() +
             layer.mlp_down.bytes();
    total += vector_bytes(layer.input_norm_weight) + vector_bytes(layer.input_norm_bias) +
             vector_bytes(layer.post_norm_weight) + vector_bytes(layer.post_norm_bias) +
             vector_bytes(layer.qkv_bias) + vector_bytes(layer.attn_out_bias) +
             vector_bytes(layer.mlp_up_bias) + vector_bytes(layer.mlp_down_bias);
  }
  return total + vector_bytes(final_norm_weight) + vector_bytes(final_norm_bias);
}

absl::StatusOr<ModelWeights> ModelWeights::FromCheckpoint(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config) {
  const TensorFinder finder(*checkpoint);
  const int64_t h = config.hidden_size, f = config.intermediate_size, v = config.vocab_size;
  ModelWeights weights;
  ASSIGN_OR_RETURN(weights.embed_in, finder.GetMatrix("gpt_neox.embed_in.weight", v, h));
  weights.layers.resize(config.num_layers);
  for (int i = 0; i < config.num_layers; ++i) {
    const std::string prefix = absl::StrCat("gpt_neox.layers.", i, ".");
    LayerWeights& layer = weights.layers[i];
    ASSIGN_OR_RETURN(layer.input_norm_weight, finder.GetVector(prefix + "input_layernorm.weight", h));
    ASSIGN_OR_RETURN(layer.input_norm_bias, finder.GetVector(prefix + "input_layernorm.bias", h));
    ASSIGN_OR_RETURN(layer.post_norm_weight,
                     finder.GetVector(prefix + "post_attention_layernorm.weight", h));
    ASSIGN_OR_RETURN(layer.post_norm_bias,
                     finder.GetVector(prefix + "post_attention_layernorm.bias", h));
    ASSIGN_OR_RETURN(layer.qkv, finder.GetMatrix(prefix + "attention.query_key_value.weight", 3 * h, h));
    ASSIGN_OR_RETURN(layer.attn_out, finder.GetMatrix(prefix + "attention.dense.weight", h, h));
    if (config.attention_bias) {
      ASSIGN_OR_RETURN(layer.qkv_bias, finder.GetVector(prefix + "attention.query_key_value.bias", 3 * h));
      ASSIGN_OR_RETURN(layer.attn_out_bias, finder.GetVector(prefix + "attention.dense.bias", h));
    } else {
      layer.qkv_bias.assign(3 * h, 0.0f);
      layer.attn_out_bias.assign(h, 0.0f);
    }
    ASSIGN_OR_RETURN(layer.mlp_up, finder.GetMatrix(prefix + "mlp.dense_h_to_4h.weight", f, h));
    ASSIGN_OR_RETURN(layer.mlp_up_bias, finder.GetVector(prefix + "mlp.dense_h_to_4h.bias", f));
    ASSIGN_OR_RETURN(layer.mlp_down, finder.GetMatrix(prefix + "mlp.dense_4h_to_h.weight", h, f));
    ASSIGN_OR_RETURN(layer.mlp_down_bias, finder.GetVector(prefix + "mlp.dense_4h_to_h.bias", h));
  }
  ASSIGN_OR_RETURN(weights.final_norm_weight, finder.GetVector("gpt_neox.final_layer_norm.weight", h));
  ASSIGN_OR_RETURN(weights.final_norm_bias, finder.GetVector("gpt_neox.final_layer_norm.bias", h));
  // A tied checkpoint usually omits embed_out; an untied one must have it.
  if (config.tie_word_embeddings && checkpoint->Find("embed_out.weight") == nullptr) {
    weights.embed_out = weights.embed_in;
  } else {
    ASSIGN_OR_RETURN(weights.embed_out, finder.GetMatrix("embed_out.weight", v, h));
  }
  weights.checkpoint = std::move(checkpoint);
  return weights;
}

}  // namespace sinkserve
