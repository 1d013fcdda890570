// libFuzzer target for the config.json reader: ModelConfig::FromJson on arbitrary bytes.
// Promises checked: a refusal names the source; an accepted config is one the engine can size
// (positive dimensions, heads dividing the hidden size, rotary dims within a head) and
// ParameterCount / Describe work on it.
//
//   ./config_fuzz -max_total_time=60 corpus-work tests/fuzz/corpus/config_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "engine/format/config.h"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "config_fuzz: violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  auto config = sinkserve::ModelConfig::FromJson(json, "fuzz.json");
  if (!config.ok()) {
    Check(config.status().message().find("fuzz.json") != std::string_view::npos,
          "every refusal names the file");
    return 0;
  }
  Check(config->hidden_size > 0 && config->num_layers > 0 && config->num_heads > 0,
        "dimensions are positive");
  Check(config->head_dim * config->num_heads == config->hidden_size, "heads divide the hidden size");
  Check(config->rotary_ndims >= 0 && config->rotary_ndims <= config->head_dim,
        "rotary dims fit a head");
  Check(config->vocab_size > 0 && config->max_position_embeddings > 0 &&
            config->intermediate_size > 0,
        "vocabulary, context and FFN are positive");
  Check(config->ParameterCount() > 0, "a positive parameter count");
  Check(!config->Describe().empty(), "Describe");
  return 0;
}
