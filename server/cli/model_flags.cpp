#include "server/cli/model_flags.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/status_macros.h"
#include "common/cli/progress_bar.h"

namespace sinkserve::cli {

void ModelFlags::AddTo(Flags& flags) {
  flags.Add("model", &path, "Hugging Face GPT-NeoX checkpoint directory, or demo (random weights)");
  flags.Add("threads", &threads, "CPU threads; 0 = all cores");
  flags.Add("backend", &backend,
            "where the model runs: cpu, cuda (an NVIDIA GPU; weights become fp16, int8 or nf4 "
            "there), or auto (cuda when this build has it and a GPU is present)");
  flags.Add("cpu-isa", &cpu_isa,
            "CPU backend kernels: auto (the best this CPU runs), avx512, avx2 or portable; "
            "the banner names the choice");
  flags.Add("cpu-activations", &cpu_activations,
            "CPU backend, int8 and nf4 weights: fp32 (exact, the default) or int8 (activations "
            "quantized per block of 64, integer dot products: faster, approximate; "
            "docs/numerics.md)");
  flags.Add("quant", &quant,
            "weight format: fp32, fp16, bf16 (dense), int8 (per-row absmax) or nf4 (blocks of "
            "64), converted at load; default: as the checkpoint stores them");
  flags.Add("double-quant", &double_quant,
            "with --quant nf4: 8-bit quantize the block absmax too (bitsandbytes double quant)");
  flags.Add("quantize-embeddings", &quantize_embeddings,
            "with --quant int8|nf4: quantize embed_in and embed_out too (else kept 16-bit)");
  flags.Add("cuda-graphs", &cuda_graphs,
            "CUDA backend: replay each decode step shape from a CUDA graph (one launch per step); "
            "--cuda-graphs=false launches kernel by kernel (like vLLM's --enforce-eager)");
  flags.Add("cuda-programmatic-launch", &cuda_programmatic_launch,
            "CUDA backend on Hopper (sm_90+): start each small-batch matrix kernel while the "
            "kernel before it finishes (programmatic dependent launch; experimental)");
}

absl::StatusOr<ModelOptions> ModelFlags::ToOptions() const {
  ModelOptions options;
  options.path = path;
  options.threads = static_cast<int>(threads);
  if (backend != "auto" && backend != "cpu" && backend != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend must be auto, cpu or cuda; got \"", backend, "\""));
  }
  options.backend = backend;
  if (backend == "cuda" && cpu_isa != "auto") {
    return absl::InvalidArgumentError(
        "--cpu-isa applies to the CPU backend; drop it or use --backend cpu (or auto)");
  }
  options.cpu_isa = cpu_isa;
  if (backend == "cuda" && cpu_activations != "fp32") {
    return absl::InvalidArgumentError(
        "--cpu-activations applies to the CPU backend; drop it or use --backend cpu (or auto)");
  }
  options.cpu_activations = cpu_activations;
  if (!quant.empty()) {
    std::optional<WeightFormat> format = ParseWeightFormat(quant);
    if (!format) {
      return absl::InvalidArgumentError(
          absl::StrCat("--quant must be one of fp32, fp16, bf16, int8, nf4; got \"", quant, "\""));
    }
    options.quant = *format;
  }
  if (double_quant && options.quant != WeightFormat::kNf4) {
    return absl::InvalidArgumentError("--double-quant needs --quant nf4");
  }
  if (quantize_embeddings && options.quant != WeightFormat::kInt8 &&
      options.quant != WeightFormat::kNf4) {
    return absl::InvalidArgumentError("--quantize-embeddings needs --quant int8 or --quant nf4");
  }
  if (backend == "cpu" && (!cuda_graphs || cuda_programmatic_launch)) {
    return absl::InvalidArgumentError(
        absl::StrCat(cuda_graphs ? "--cuda-programmatic-launch" : "--cuda-graphs",
                     " applies to the CUDA backend; drop it or use --backend cuda (or auto)"));
  }
  options.cuda.graphs = cuda_graphs;
  options.cuda.programmatic_launch = cuda_programmatic_launch;
  options.double_quant = double_quant;
  options.quantize_embeddings = quantize_embeddings;
  return options;
}

uint64_t PeakRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(ModelOptions options) {
  const auto start = std::chrono::steady_clock::now();
  // Millions of weights: the counts of a large model stay readable.
  std::unique_ptr<ProgressBar> progress;
  options.conversion_progress = [&](int64_t done, int64_t total) {
    if (progress == nullptr) {
      progress = std::make_unique<ProgressBar>(
          absl::StrCat("converting weights to ", std::string(WeightFormatName(options.quant))),
          total / 1000000, "M weights");
    }
    progress->Update(done / 1000000);
    if (done == total) progress->Finish();
  };
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(options);
  if (!model.ok()) return model.status();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const Model& loaded = **model;
  std::fprintf(stderr,
               "sinkserve: model %s: %s, %.1f M parameters, weights %s: %.1f MB "
               "(weights_bytes %llu), %s, loaded in %.2f s, peak RSS %.1f MB\n",
               loaded.name().c_str(), loaded.config().Describe().c_str(),
               loaded.config().ParameterCount() / 1e6, loaded.weights_format().c_str(),
               loaded.weights_bytes() / 1e6,
               static_cast<unsigned long long>(loaded.weights_bytes()),
               (*model)->backend().name().c_str(), seconds, PeakRssBytes() / 1e6);
  if (loaded.is_demo()) {
    std::fprintf(stderr,
                 "sinkserve: NOTE: this is the built-in DEMO model with RANDOM weights: "
                 "its output is random text. Pass --model DIR for a real checkpoint.\n");
  }
  return model;
}

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const std::string& text,
                                                   const std::string& source) {
  std::vector<int32_t> ids;
  for (absl::string_view word :
       absl::StrSplit(text, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(word, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": entry ", ids.size(), " (\"", word,
                                                     "\") is not a non-negative token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<CachePolicy> ToPolicy(const CacheFlags& flags) {
  RETURN_IF_ERROR(flags.Validate());
  CachePolicy policy;
  if (flags.dense) {
    policy.kind = CachePolicy::Kind::kCachePolicyDense;
    return policy;
  }
  policy.sink_tokens = static_cast<int>(flags.sink);
  policy.window_tokens = static_cast<int>(flags.window);
  return policy;
}

}  // namespace sinkserve::cli
