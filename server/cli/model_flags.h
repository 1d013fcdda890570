// What the model-running subcommands share: the flags that choose the model and its cache policy,
// and model loading with a clear banner.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cli/cache_flags.h"
#include "common/cli/flags.h"
#include "engine/backend/kv_cache.h"
#include "engine/model.h"

namespace sinkserve::cli {

// Loads a model, telling stderr what is loaded (and loudly when it is the random demo model):
// its weight format, weights_bytes and the peak RSS so far. Shows the load-time conversion's
// progress on a terminal.
absl::StatusOr<std::unique_ptr<Model>> LoadModel(ModelOptions options);

// The process's peak resident set size so far (getrusage ru_maxrss), in bytes.
uint64_t PeakRssBytes();

// Whitespace-separated integers ("1 2 3\n4"), INVALID_ARGUMENT naming the bad entry.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const std::string& text,
                                                   const std::string& source);

// --model / --threads / --backend / --cpu-isa / --cpu-activations / --quant / --double-quant /
// --quantize-embeddings: which model the commands load and how they run it.
struct ModelFlags {
  std::string path = "demo";
  int64_t threads = 0;
  std::string backend = "auto";
  std::string cpu_isa = "auto";
  std::string cpu_activations = "fp32";
  std::string quant;  // empty: as stored
  bool double_quant = false;
  bool quantize_embeddings = false;
  bool cuda_graphs = true;
  bool cuda_programmatic_launch = false;

  void AddTo(Flags& flags);
  absl::StatusOr<ModelOptions> ToOptions() const;  // INVALID_ARGUMENT naming the flag
};

// The engine's cache policy for validated --sink / --window / --dense flags.
absl::StatusOr<CachePolicy> ToPolicy(const CacheFlags& flags);  // INVALID_ARGUMENT naming the flag

}  // namespace sinkserve::cli
