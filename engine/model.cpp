#include "engine/model.h"

#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_isa.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/demo_model.h"
#include "engine/format/safetensors.h"
#include "common/base/status_macros.h"

namespace sinkserve {

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelOptions& options) {
  const WeightConversion conversion{options.quant, options.double_quant,
                                    options.quantize_embeddings};
  if (absl::Status status = conversion.Validate(); !status.ok()) return status;
  std::unique_ptr<Model> model(new Model());
  if (options.path.empty() || options.path == "demo") {
    model->is_demo_ = true;
    model->name_ = kDemoModelName;
    model->config_ = DemoModelConfig();
    model->weights_ = DemoModelWeights(model->config_, /*seed=*/20240101);
    model->tokenizer_ = Tokenizer::ByteLevelDemo();
  } else {
    const std::filesystem::path dir(options.path);
    if (!std::filesystem::is_directory(dir)) {
      return absl::NotFoundError(absl::StrCat(
          "model directory ", options.path, " does not exist; pass a Hugging Face checkpoint "
          "directory (config.json + *.safetensors), or \"demo\" for the built-in model"));
    }
    model->name_ = std::filesystem::absolute(dir).filename().string();
    ASSIGN_OR_RETURN(model->config_, ModelConfig::FromFile((dir / "config.json").string()));
    ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(options.path));
    ASSIGN_OR_RETURN(model->weights_,
                     ModelWeights::FromCheckpoint(std::move(checkpoint), model->config_));
    const std::filesystem::path tokenizer_path = dir / "tokenizer.json";
    if (std::filesystem::exists(tokenizer_path)) {
      ASSIGN_OR_RETURN(model->tokenizer_, Tokenizer::FromFile(tokenizer_path.string()));
    }
  }
  {
    ThreadPool pool(options.threads);
    RETURN_IF_ERROR(
        ConvertWeights(conversion, model->weights_, pool, options.conversion_progress));
  }
  model->weights_format_ = conversion.Describe(model->weights_);
  std::string backend = options.backend;
  if (backend == "auto") backend = CudaAvailable().ok() ? "cuda" : "cpu";
  if (backend == "cuda") {
    ASSIGN_OR_RETURN(model->backend_,
                     NewCudaBackend(model->config_, model->weights_, options.cuda));
  } else if (backend == "cpu") {
    const std::optional<cpu::CpuIsa> isa = cpu::ParseCpuIsa(options.cpu_isa);
    if (!isa) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cpu-isa must be auto, avx512, avx2 or portable, got \"", options.cpu_isa, "\""));
    }
    if (!cpu::CpuSupports(*isa)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cpu-isa ", options.cpu_isa, ": this CPU lacks it (best here: ",
          cpu::CpuIsaName(cpu::CpuIsa::kAuto), "); use --cpu-isa auto"));
    }
    model->backend_ =
        std::make_unique<CpuBackend>(model->config_, model->weights_, options.threads, *isa);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend must be auto, cpu or cuda, got \"", backend, "\""));
  }
  return model;
}

absl::StatusOr<const Tokenizer*> Model::RequireTokenizer() const {
  if (tokenizer_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", name_, " has no tokenizer.json: copy the model's tokenizer.json into its "
        "directory, or pass token ids instead of text"));
  }
  return tokenizer_.get();
}

}  // namespace sinkserve
