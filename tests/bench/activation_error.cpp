// The error of --cpu-activations int8 against the exact path (docs/numerics.md, "Int8
// activations"): one model, two CPU backends over the same weights — fp32 activations and
// int8 activations — run over the same text in independent chunks (all logits), compared per
// predicted position:
//   mean KL(p_fp32 ‖ p_int8) of the next-token distributions (nats), max KL,
//   top-1 agreement, and each path's perplexity (exp mean NLL of the actual next token).
//
//   activation_error --model DIR --quant int8|nf4 (--text-file FILE | --token-ids-file FILE)
//                    [--max-tokens 4096] [--chunk 512] [--threads 1] [--cpu-isa auto]
// Prints one JSON object.
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/cli/flags.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "nlohmann/json.hpp"

namespace sinkserve {
namespace {

// log softmax of one row, in double.
std::vector<double> LogSoftmax(std::span<const float> logits) {
  double max = logits[0];
  for (float l : logits) max = std::max(max, static_cast<double>(l));
  double sum = 0.0;
  for (float l : logits) sum += std::exp(l - max);
  const double log_sum = max + std::log(sum);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_sum;
  return out;
}

int Run(int argc, char** argv) {
  cli::Flags flags("activation_error", "fp32 vs int8 CPU activations: mean KL, perplexities",
                   "activation_error");
  std::string model_path, quant = "int8", text_file, ids_file, cpu_isa = "auto";
  int64_t max_tokens = 4096, chunk = 512, threads = 1;
  flags.Add("model", &model_path, "checkpoint directory");
  flags.Add("quant", &quant, "int8 or nf4");
  flags.Add("text-file", &text_file, "text to run (tokenized with the model's tokenizer)");
  flags.Add("token-ids-file", &ids_file, "whitespace-separated token ids instead");
  flags.Add("max-tokens", &max_tokens, "tokens of the text to use");
  flags.Add("chunk", &chunk, "tokens per independent chunk");
  flags.Add("threads", &threads, "CPU threads");
  flags.Add("cpu-isa", &cpu_isa, "kernels: auto, avx512, avx2, portable");
  if (absl::Status status = flags.Parse(argc, argv, 1); !status.ok()) {
    std::fprintf(stderr, "activation_error: %s\n", std::string(status.message()).c_str());
    return 2;
  }
  ModelOptions options;
  options.path = model_path;
  options.threads = static_cast<int>(threads);
  const std::optional<WeightFormat> format = ParseWeightFormat(quant);
  if (format != WeightFormat::kInt8 && format != WeightFormat::kNf4) {
    std::fprintf(stderr, "activation_error: --quant must be int8 or nf4, got \"%s\"\n",
                 quant.c_str());
    return 2;
  }
  options.quant = *format;
  options.cpu_isa = cpu_isa;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(options);
  absl::StatusOr<std::string> text = ReadFile(ids_file.empty() ? text_file : ids_file);
  if (!model.ok() || !text.ok()) {
    std::fprintf(
        stderr, "activation_error: %s\n",
        std::string(!model.ok() ? model.status().message() : text.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<std::vector<int32_t>> ids;
  if (ids_file.empty()) {
    absl::StatusOr<const Tokenizer*> tokenizer = (*model)->RequireTokenizer();
    ids = tokenizer.ok() ? (*tokenizer)->Encode(*text) : tokenizer.status();
  } else {
    std::istringstream words(*text);
    ids.emplace();
    for (int32_t id; words >> id;) ids->push_back(id);
  }
  if (!ids.ok()) {
    std::fprintf(stderr, "activation_error: %s\n", std::string(ids.status().message()).c_str());
    return 1;
  }
  std::vector<int32_t> tokens = *std::move(ids);
  if (static_cast<int64_t>(tokens.size()) > max_tokens) tokens.resize(max_tokens);

  const ModelConfig& config = (*model)->config();
  const cpu::CpuIsa isa = *cpu::ParseCpuIsa(cpu_isa);  // Model::Load checked it
  CpuBackend exact(config, (*model)->weights(), static_cast<int>(threads), isa,
                   cpu::Activations::kFp32);
  CpuBackend int8(config, (*model)->weights(), static_cast<int>(threads), isa,
                  cpu::Activations::kInt8);
  const int vocab = config.vocab_size;
  std::vector<float> exact_logits(static_cast<size_t>(chunk) * vocab),
      int8_logits(exact_logits.size());
  double kl_sum = 0.0, kl_max = 0.0, nll_exact = 0.0, nll_int8 = 0.0;
  int64_t positions = 0, agree = 0;
  for (size_t begin = 0; begin + 1 < tokens.size(); begin += chunk) {
    const size_t length = std::min<size_t>(chunk, tokens.size() - begin);
    const std::span<const int32_t> piece(&tokens[begin], length);
    std::unique_ptr<KvCache> exact_cache = *exact.NewDenseCache(static_cast<int>(chunk));
    std::unique_ptr<KvCache> int8_cache = *int8.NewDenseCache(static_cast<int>(chunk));
    if (!exact.Forward(piece, *exact_cache, exact_logits, true).ok() ||
        !int8.Forward(piece, *int8_cache, int8_logits, true).ok()) {
      return 1;
    }
    for (size_t t = 0; t + 1 < length; ++t) {
      const std::span<const float> p(&exact_logits[t * vocab], vocab);
      const std::span<const float> q(&int8_logits[t * vocab], vocab);
      const std::vector<double> log_p = LogSoftmax(p), log_q = LogSoftmax(q);
      double kl = 0.0;
      int argmax_p = 0, argmax_q = 0;
      for (int v = 0; v < vocab; ++v) {
        kl += std::exp(log_p[v]) * (log_p[v] - log_q[v]);
        if (p[v] > p[argmax_p]) argmax_p = v;
        if (q[v] > q[argmax_q]) argmax_q = v;
      }
      kl_sum += kl;
      kl_max = std::max(kl_max, kl);
      agree += argmax_p == argmax_q;
      nll_exact += TokenNll(p, piece[t + 1]);
      nll_int8 += TokenNll(q, piece[t + 1]);
      ++positions;
    }
  }
  const nlohmann::json out = {
      {"model", (*model)->name()},
      {"weights", (*model)->weights_format()},
      {"backend_exact", exact.name()},
      {"backend_int8", int8.name()},
      {"tokens", tokens.size()},
      {"chunk", chunk},
      {"positions", positions},
      {"mean_kl", kl_sum / positions},
      {"max_kl", kl_max},
      {"top1_agreement", static_cast<double>(agree) / positions},
      {"ppl_exact", std::exp(nll_exact / positions)},
      {"ppl_int8", std::exp(nll_int8 / positions)},
  };
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::Run(argc, argv); }
