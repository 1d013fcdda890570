// ModelConfig: the hyper-parameters of a GPT-NeoX model, read from a Hugging Face config.json.
//
// This is the only place that knows HF config keys (docs/numerics.md). Unsupported architectures or
// fields that would change the numerics (rope scaling, unknown activations) are errors, never
// silently ignored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sinkserve {

enum class Activation : uint8_t {
  kActivationGeluErf,   // "gelu": x·Φ(x) with the exact erf
  kActivationGeluTanh,  // "gelu_new", "gelu_fast", "gelu_pytorch_tanh": the tanh approximation
};

struct ModelConfig {
  int hidden_size = 0;              // H
  int num_layers = 0;               // L
  int num_heads = 0;                // n_head
  int head_dim = 0;                 // d = H / n_head
  int intermediate_size = 0;        // FFN width (4·H in Pythia)
  int rotary_ndims = 0;             // int(d · rotary_pct): the rotated prefix of each head
  double rotary_base = 10000.0;     // rotary_emb_base (a.k.a. rope_theta)
  bool parallel_residual = true;    // x + attn(LN1 x) + mlp(LN2 x), else sequential
  float layer_norm_eps = 1e-5f;
  int vocab_size = 0;               // rows of embed_in / embed_out (may exceed the tokenizer's)
  int max_position_embeddings = 0;  // default capacity of a dense cache
  Activation activation = Activation::kActivationGeluErf;
  bool tie_word_embeddings = false;  // embed_out shares embed_in
  bool attention_bias = true;        // query_key_value and dense carry biases

  // Parses config.json text. `source` names the file in error messages.
  static absl::StatusOr<ModelConfig> FromJson(std::string_view json, std::string_view source);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);

  // Parameters counted like HF's num_parameters() (embed_out counted once when tied).
  int64_t ParameterCount() const;
  std::string Describe() const;  // "6 layers x 512 hidden x 8 heads (d=64, rotary 16), vocab 50304"
};

}  // namespace sinkserve
