#include "engine/demo_model.h"

#include <cmath>
#include <cstring>

#include "common/base/half.h"

namespace sinkserve {
namespace {

// Portable normal numbers: splitmix64 + Box-Muller (std:: distributions differ between
// standard libraries, and the demo must be the same model everywhere).
class Normal {
 public:
  explicit Normal(uint64_t seed) : state_(seed) {}
  float Next(float stddev) {
    const double u1 = (static_cast<double>(NextBits() >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(NextBits() >> 11) * 0x1.0p-53;
    return static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) *
                              std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t NextBits() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

Matrix RandomMatrix(ModelWeights& weights, Normal& normal, int64_t rows, int64_t cols,
                    float stddev, DType dtype) {
  auto buffer = std::make_unique<std::byte[]>(rows * cols * DTypeSize(dtype));
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float value = normal.Next(stddev);
    if (dtype == DType::kF32) {
      std::memcpy(buffer.get() + 4 * i, &value, 4);
    } else {
      const uint16_t bits = dtype == DType::kF16 ? FloatToF16(value) : FloatToBf16(value);
      std::memcpy(buffer.get() + 2 * i, &bits, 2);
    }
  }
  Matrix matrix{dtype, rows, cols, buffer.get()};
  weights.owned.push_back(std::move(buffer));
  return matrix;
}

std::vector<float> RandomVector(Normal& normal, int64_t size, float mean, float stddev) {
  std::vector<float> values(size);
  for (float& value : values) value = mean + normal.Next(stddev);
  return values;
}

}  // namespace

ModelConfig DemoModelConfig() {
  ModelConfig config;
  config.hidden_size = 256;
  config.num_layers = 4;
  config.num_heads = 4;
  config.head_dim = 64;
  config.intermediate_size = 1024;
  config.rotary_ndims = 16;
  config.vocab_size = 257;
  config.max_position_embeddings = 2048;
  return config;
}

ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed, DType dtype) {
  Normal normal(seed);
  ModelWeights weights;
  const int64_t h = config.hidden_size, f = config.intermediate_size, v = config.vocab_size;
  const float matrix_std = 1.0f / std::sqrt(static_cast<float>(h));
  weights.embed_in = RandomMatrix(weights, normal, v, h, 1.0f, dtype);
  for (int i = 0; i < config.num_layers; ++i) {
    LayerWeights layer;
    layer.input_norm_weight = RandomVector(normal, h, 1.0f, 0.1f);
    layer.input_norm_bias = RandomVector(normal, h, 0.0f, 0.1f);
    layer.post_norm_weight = RandomVector(normal, h, 1.0f, 0.1f);
    layer.post_norm_bias = RandomVector(normal, h, 0.0f, 0.1f);
    layer.qkv = RandomMatrix(weights, normal, 3 * h, h, matrix_std, dtype);
    layer.qkv_bias = RandomVector(normal, 3 * h, 0.0f, 0.02f);
    layer.attn_out = RandomMatrix(weights, normal, h, h, matrix_std, dtype);
    layer.attn_out_bias = RandomVector(normal, h, 0.0f, 0.02f);
    layer.mlp_up = RandomMatrix(weights, normal, f, h, matrix_std, dtype);
    layer.mlp_up_bias = RandomVector(normal, f, 0.0f, 0.02f);
    layer.mlp_down =
        RandomMatrix(weights, normal, h, f, 1.0f / std::sqrt(static_cast<float>(f)), dtype);
    layer.mlp_down_bias = RandomVector(normal, h, 0.0f, 0.02f);
    weights.layers.push_back(std::move(layer));
  }
  weights.final_norm_weight = RandomVector(normal, h, 1.0f, 0.1f);
  weights.final_norm_bias = RandomVector(normal, h, 0.0f, 0.1f);
  weights.embed_out = RandomMatrix(weights, normal, v, h, 0.5f, dtype);
  return weights;
}

ModelWeights DemoModelWeights(const ModelConfig& config, uint64_t seed) {
  ModelWeights weights = RandomModelWeights(config, seed, DType::kF32);
  const int64_t h = config.hidden_size, v = config.vocab_size;
  // Silence the LM head rows of non-printable bytes: their logits are 0 while printable ones
  // spread over several units, so sampling mostly picks printable ASCII.
  float* head = reinterpret_cast<float*>(weights.owned.back().get());
  for (int64_t token = 0; token < v; ++token) {
    const bool printable = (token >= 0x20 && token < 0x7f) || token == '\n';
    if (!printable) std::memset(head + token * h, 0, h * sizeof(float));
  }
  return weights;
}

}  // namespace sinkserve
