// Model: a loaded GPT-NeoX model — config, weights, tokenizer and the backend that runs it.
// What the CLI and the scheduler hold; one thread uses it at a time.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/format/config.h"
#include "engine/format/quantize_weights.h"
#include "engine/format/weights.h"
#include "engine/tokenizer/tokenizer.h"

namespace sinkserve {

struct ModelOptions {
  std::string path = "demo";  // a HF checkpoint directory, or "demo" for the built-in model
  int threads = 0;            // CPU threads; 0 = all cores
  // "cpu", "cuda", or "auto" (cuda when this build has it and a device is present, else cpu).
  std::string backend = "cpu";
  // Weight format (engine/format/quantize_weights.h): as stored, another dense width, or int8 / NF4
  // block matrices quantized at load.
  WeightFormat quant = WeightFormat::kAsStored;
  bool double_quant = false;         // NF4 only: 8-bit quantized absmax
  bool quantize_embeddings = false;  // int8 / NF4 only: embed_in and embed_out quantized too
  CudaOptions cuda = {};             // the CUDA backend's (graphs, programmatic launch, ...)
  // The CPU backend's kernels: "auto" (the best this CPU runs), "avx512", "avx2" or "portable"
  // (engine/cpu/cpu_isa.h); one this CPU lacks is INVALID_ARGUMENT.
  std::string cpu_isa = "auto";
  // The CPU backend's activations for int8 / NF4 matrices: "fp32" (exact) or "int8" (quantized
  // per block of 64, integer dot products: engine/cpu/int8_activations.h).
  std::string cpu_activations = "fp32";
  // Called during load-time conversion (elements converted, of total); may be empty.
  ConversionProgress conversion_progress = nullptr;
};

class Model {
 public:
  // Loads and validates everything; errors name the file (and tensor) at fault and say what
  // to do. Never crashes on a bad checkpoint.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const ModelOptions& options);

  const ModelConfig& config() const { return config_; }
  // nullptr when the checkpoint has no tokenizer.json (token ids still work).
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  Backend& backend() { return *backend_; }
  bool is_demo() const { return is_demo_; }
  const std::string& name() const { return name_; }
  // The exact bytes the weights occupy as loaded (quantized codes and their statistics).
  uint64_t weights_bytes() const { return weights_.bytes(); }
  const ModelWeights& weights() const { return weights_; }
  // E.g. "nf4, embeddings F16"; "as stored (F16)".
  const std::string& weights_format() const { return weights_format_; }

  // Who this model is, for saved sessions: a session saved under one fingerprint continues
  // only under the same one. "<every config field>; weights <identity>; <format>" (not the
  // directory's name: replicas may mount one checkpoint at different paths),
  // plus "; int8 activations" under --cpu-activations int8,
  // where the identity is a CRC-32C over each tensor's name, dtype, shape, byte size and its
  // first and last 4 KiB (the demo model: its seed) — cheap at start-up, and different for any
  // two checkpoints that differ in a tensor's shape or its edges.
  const std::string& fingerprint() const { return fingerprint_; }

  // The tokenizer, or FAILED_PRECONDITION explaining that the checkpoint lacks tokenizer.json.
  absl::StatusOr<const Tokenizer*> RequireTokenizer() const;

 private:
  Model() = default;

  ModelConfig config_;
  ModelWeights weights_;  // the CUDA backend keeps its own device copy
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Backend> backend_;
  bool is_demo_ = false;
  std::string name_;
  std::string weights_format_;
  std::string fingerprint_;
};

}  // namespace sinkserve
