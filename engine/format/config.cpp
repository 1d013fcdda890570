#include "engine/format/config.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/strict_json.h"
#include "nlohmann/json.hpp"

namespace sinkserve {
namespace {

using Json = nlohmann::json;

// A real config.json is a few KB; this bounds what a hostile one makes us read.
constexpr uint64_t kMaxConfigBytes = 1 << 20;

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": field \"", field, "\" ", what));
}

// Reads a required positive integer field.
absl::StatusOr<int> PositiveInt(const Json& json, const std::string& source, const char* field) {
  auto it = json.find(field);
  if (it == json.end()) return FieldError(source, field, "is missing");
  if (!it->is_number_integer()) return FieldError(source, field, "must be an integer");
  int64_t value = it->get<int64_t>();
  if (value <= 0 || value > (int64_t{1} << 30)) {
    return FieldError(source, field, absl::StrCat("must be positive and sane, got ", value));
  }
  return static_cast<int>(value);
}

template <typename T>
absl::StatusOr<T> Optional(const Json& json, const std::string& source, const char* field,
                           T fallback) {
  auto it = json.find(field);
  if (it == json.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const Json::exception&) {
    return FieldError(source, field, "has the wrong type");
  }
}

absl::StatusOr<Activation> ParseActivation(const std::string& name, const std::string& source) {
  if (name == "gelu") return Activation::kActivationGeluErf;
  if (name == "gelu_new" || name == "gelu_fast" || name == "gelu_pytorch_tanh") {
    return Activation::kActivationGeluTanh;
  }
  return FieldError(source, "hidden_act",
                    absl::StrCat("is \"", name,
                                 "\"; supported: gelu, gelu_new, gelu_fast, gelu_pytorch_tanh"));
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view text,
                                                  std::string_view source_view) {
  // (absl::StrCat on Debian's abseil takes std::string but not std::string_view.)
  const std::string source(source_view);
  absl::StatusOr<Json> parsed = ParseStrictJson(text, source);
  if (!parsed.ok()) return parsed.status();
  const Json& json = *parsed;
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  // Architecture: GPT-NeoX only. HF writes both fields; accept either.
  // (json.value() would throw on a non-string; a config of the wrong shape is an error.)
  const auto type = json.find("model_type");
  const std::string model_type =
      type != json.end() && type->is_string() ? type->get<std::string>() : std::string();
  bool is_neox = model_type == "gpt_neox";
  if (auto arch = json.find("architectures"); arch != json.end() && arch->is_array()) {
    for (const Json& name : *arch) {
      if (name.is_string() && name.get<std::string>() == "GPTNeoXForCausalLM") is_neox = true;
    }
  }
  if (!is_neox) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": unsupported architecture (model_type \"", model_type,
        "\"); sinkserve runs GPT-NeoX models (GPTNeoXForCausalLM, e.g. EleutherAI/pythia-*)"));
  }

  ModelConfig config;
  absl::StatusOr<int> value = PositiveInt(json, source, "hidden_size");
  if (!value.ok()) return value.status();
  config.hidden_size = *value;
  if (!(value = PositiveInt(json, source, "num_hidden_layers")).ok()) return value.status();
  config.num_layers = *value;
  if (!(value = PositiveInt(json, source, "num_attention_heads")).ok()) return value.status();
  config.num_heads = *value;
  if (!(value = PositiveInt(json, source, "intermediate_size")).ok()) return value.status();
  config.intermediate_size = *value;
  if (!(value = PositiveInt(json, source, "vocab_size")).ok()) return value.status();
  config.vocab_size = *value;
  if (!(value = PositiveInt(json, source, "max_position_embeddings")).ok()) return value.status();
  config.max_position_embeddings = *value;

  if (config.hidden_size % config.num_heads != 0) {
    return FieldError(source, "num_attention_heads",
                      absl::StrCat("(", config.num_heads, ") must divide hidden_size (",
                                   config.hidden_size, ")"));
  }
  config.head_dim = config.hidden_size / config.num_heads;

  // Rotary parameters: transformers < 5 writes rotary_pct / rotary_emb_base (Pythia's own
  // configs); transformers 5 writes rope_parameters {partial_rotary_factor, rope_theta,
  // rope_type}. Read either, reject any rope scheme other than the default.
  double rotary_pct = 1.0;
  double base = 10000.0;
  if (auto rope = json.find("rope_parameters"); rope != json.end() && !rope->is_null()) {
    if (!rope->is_object()) return FieldError(source, "rope_parameters", "must be an object");
    absl::StatusOr<std::string> type =
        Optional<std::string>(*rope, source, "rope_type", "default");
    if (!type.ok()) return type.status();
    if (*type != "default") {
      return FieldError(source, "rope_parameters.rope_type",
                        "is \"" + *type + "\"; only \"default\" rotary embeddings are supported");
    }
    absl::StatusOr<double> factor = Optional<double>(*rope, source, "partial_rotary_factor", 1.0);
    if (!factor.ok()) return factor.status();
    absl::StatusOr<double> theta = Optional<double>(*rope, source, "rope_theta", 10000.0);
    if (!theta.ok()) return theta.status();
    rotary_pct = *factor;
    base = *theta;
  } else {
    absl::StatusOr<double> pct = Optional<double>(json, source, "rotary_pct", 1.0);
    if (!pct.ok()) return pct.status();
    absl::StatusOr<double> legacy_base = Optional<double>(json, source, "rotary_emb_base", 10000.0);
    if (!legacy_base.ok()) return legacy_base.status();
    absl::StatusOr<double> theta = Optional<double>(json, source, "rope_theta", *legacy_base);
    if (!theta.ok()) return theta.status();
    rotary_pct = *pct;
    base = *theta;
  }
  if (!(rotary_pct > 0.0 && rotary_pct <= 1.0)) {
    return FieldError(source, "rotary_pct", "must be in (0, 1]");
  }
  // HF: int(head_size * rotary_pct).
  config.rotary_ndims = static_cast<int>(config.head_dim * rotary_pct);
  if (config.rotary_ndims % 2 != 0 || config.rotary_ndims == 0) {
    return FieldError(source, "rotary_pct",
                      absl::StrCat("gives an odd or zero rotary width (", config.rotary_ndims,
                                   "); rotate_half needs an even one"));
  }
  if (!(base > 1.0)) return FieldError(source, "rotary_emb_base", "must be > 1");
  config.rotary_base = base;
  if (auto scaling = json.find("rope_scaling"); scaling != json.end() && !scaling->is_null()) {
    return FieldError(source, "rope_scaling", "is set; rope scaling is not supported");
  }

  absl::StatusOr<bool> flag = Optional<bool>(json, source, "use_parallel_residual", true);
  if (!flag.ok()) return flag.status();
  config.parallel_residual = *flag;
  if (!(flag = Optional<bool>(json, source, "tie_word_embeddings", false)).ok()) {
    return flag.status();
  }
  config.tie_word_embeddings = *flag;
  if (!(flag = Optional<bool>(json, source, "attention_bias", true)).ok()) return flag.status();
  config.attention_bias = *flag;

  absl::StatusOr<double> eps = Optional<double>(json, source, "layer_norm_eps", 1e-5);
  if (!eps.ok()) return eps.status();
  if (!(*eps > 0.0 && *eps < 1.0)) return FieldError(source, "layer_norm_eps", "must be in (0, 1)");
  config.layer_norm_eps = static_cast<float>(*eps);

  absl::StatusOr<std::string> act = Optional<std::string>(json, source, "hidden_act", "gelu");
  if (!act.ok()) return act.status();
  absl::StatusOr<Activation> activation = ParseActivation(*act, source);
  if (!activation.ok()) return activation.status();
  config.activation = *activation;
  return config;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text =
      ReadFile(path, {.max_bytes = kMaxConfigBytes, .regular_file_only = true});
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        text.status().message(), ": a model directory needs the config.json of a HF checkpoint"));
  }
  if (!text.ok()) return text.status();
  return FromJson(*text, path);
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t h = hidden_size, f = intermediate_size, v = vocab_size;
  const int64_t attention = 3 * h * h + (attention_bias ? 3 * h : 0) + h * h +
                            (attention_bias ? h : 0);
  const int64_t mlp = h * f + f + f * h + h;
  const int64_t norms = 4 * h;
  const int64_t embeddings = v * h * (tie_word_embeddings ? 1 : 2);
  return num_layers * (attention + mlp + norms) + embeddings + 2 * h;
}

std::string ModelConfig::Describe() const {
  return absl::StrCat(num_layers, " layers x ", hidden_size, " hidden x ", num_heads,
                      " heads (d=", head_dim, ", rotary ", rotary_ndims, "), FFN ",
                      intermediate_size, ", vocab ", vocab_size,
                      parallel_residual ? ", parallel residual" : ", sequential residual");
}

}  // namespace sinkserve
