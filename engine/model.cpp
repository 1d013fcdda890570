#include "engine/model.h"

#include <algorithm>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/base/crc32c.h"
#include "common/base/status_macros.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_isa.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/demo_model.h"
#include "engine/format/model_directory.h"
#include "engine/format/safetensors.h"

namespace sinkserve {
namespace {

constexpr uint32_t kDemoSeed = 20240101;

// Every field that changes the numerics, in one line.
std::string ConfigFingerprint(const ModelConfig& c) {
  return absl::StrCat("hidden ", c.hidden_size, " layers ", c.num_layers, " heads ", c.num_heads,
                      " head_dim ", c.head_dim, " ffn ", c.intermediate_size, " rotary ",
                      c.rotary_ndims, "@", c.rotary_base, " parallel ", c.parallel_residual,
                      " eps ", c.layer_norm_eps, " vocab ", c.vocab_size, " context ",
                      c.max_position_embeddings, " act ", static_cast<int>(c.activation), " tied ",
                      c.tie_word_embeddings, " bias ", c.attention_bias);
}

// See Model::fingerprint().
std::string CheckpointIdentity(const Checkpoint& checkpoint) {
  constexpr size_t kEdge = 4096;
  uint32_t crc = 0;
  auto add = [&](const void* data, size_t size) {
    crc = Crc32c(std::span(static_cast<const std::byte*>(data), size), crc);
  };
  for (const std::string& name : checkpoint.names()) {
    const TensorInfo& tensor = *checkpoint.Find(name);
    add(name.data(), name.size());
    add(&tensor.dtype, sizeof(tensor.dtype));
    add(tensor.shape.data(), tensor.shape.size() * sizeof(int64_t));
    add(&tensor.nbytes, sizeof(tensor.nbytes));
    const size_t edge = std::min(kEdge, tensor.nbytes);
    add(tensor.data, edge);
    add(tensor.data + tensor.nbytes - edge, edge);
  }
  return absl::StrCat("crc32c ", absl::Hex(crc, absl::kZeroPad8), " of ", checkpoint.names().size(),
                      " tensors");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelOptions& options) {
  const WeightConversion conversion{options.quant, options.double_quant,
                                    options.quantize_embeddings};
  if (absl::Status status = conversion.Validate(); !status.ok()) return status;
  std::unique_ptr<Model> model(new Model());
  if (options.path.empty() || options.path == "demo") {
    model->is_demo_ = true;
    model->name_ = kDemoModelName;
    model->config_ = DemoModelConfig();
    model->weights_ = DemoModelWeights(model->config_, kDemoSeed);
    model->fingerprint_ = absl::StrCat("demo seed ", kDemoSeed);
    model->tokenizer_ = Tokenizer::ByteLevelDemo();
  } else {
    ASSIGN_OR_RETURN(const ModelDirectory directory, ResolveModelDirectory(options.path));
    const std::filesystem::path dir(directory.path);
    if (!std::filesystem::is_directory(dir)) {
      return absl::NotFoundError(absl::StrCat(
          "model directory ", options.path,
          " does not exist; pass a Hugging Face checkpoint "
          "directory (config.json + model.safetensors or pytorch_model.bin) or its hub cache "
          "folder (models--ORG--NAME), or \"demo\" for the built-in model"));
    }
    model->name_ = directory.name;
    ASSIGN_OR_RETURN(model->config_, ModelConfig::FromFile((dir / "config.json").string()));
    ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(directory.path));
    model->fingerprint_ = CheckpointIdentity(*checkpoint);
    ASSIGN_OR_RETURN(model->weights_,
                     ModelWeights::FromCheckpoint(std::move(checkpoint), model->config_));
    const std::filesystem::path tokenizer_path = dir / "tokenizer.json";
    if (std::filesystem::exists(tokenizer_path)) {
      ASSIGN_OR_RETURN(model->tokenizer_, Tokenizer::FromFile(tokenizer_path.string()));
    }
  }
  {
    ThreadPool pool(options.threads);
    RETURN_IF_ERROR(ConvertWeights(conversion, model->weights_, pool, options.conversion_progress));
  }
  model->weights_format_ = conversion.Describe(model->weights_);
  model->fingerprint_ = absl::StrCat(ConfigFingerprint(model->config_), "; weights ",
                                     model->fingerprint_, "; ", model->weights_format_);
  // Int8 activations change every cached key and value, as another weight format would.
  if (options.cpu_activations == "int8")
    absl::StrAppend(&model->fingerprint_, "; int8 activations");
  std::string backend = options.backend;
  if (backend == "auto") backend = CudaAvailable().ok() ? "cuda" : "cpu";
  if (backend == "cuda") {
    if (options.cpu_activations != "fp32") {
      return absl::InvalidArgumentError(
          "--cpu-activations applies to the CPU backend; drop it or use --backend cpu");
    }
    ASSIGN_OR_RETURN(model->backend_,
                     NewCudaBackend(model->config_, model->weights_, options.cuda));
  } else if (backend == "cpu") {
    const std::optional<cpu::CpuIsa> isa = cpu::ParseCpuIsa(options.cpu_isa);
    if (!isa) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cpu-isa must be auto, avx512, avx2 or portable, got \"", options.cpu_isa, "\""));
    }
    if (!cpu::CpuSupports(*isa)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cpu-isa ", options.cpu_isa, ": this CPU lacks it (best here: ",
                       cpu::CpuIsaName(cpu::CpuIsa::kAuto), "); use --cpu-isa auto"));
    }
    const std::optional<cpu::Activations> activations =
        cpu::ParseActivations(options.cpu_activations);
    if (!activations) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cpu-activations must be fp32 or int8, got \"", options.cpu_activations, "\""));
    }
    model->backend_ = std::make_unique<CpuBackend>(model->config_, model->weights_, options.threads,
                                                   *isa, *activations);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend must be auto, cpu or cuda, got \"", backend, "\""));
  }
  return model;
}

absl::StatusOr<const Tokenizer*> Model::RequireTokenizer() const {
  if (tokenizer_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", name_,
                     " has no tokenizer.json: copy the model's tokenizer.json into its "
                     "directory, or pass token ids instead of text"));
  }
  return tokenizer_.get();
}

}  // namespace sinkserve
