// sinkserve perplexity: per-token NLL of a text, fed one token at a time (DESIGN §4).
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "engine/perplexity.h"
#include "nlohmann/json.hpp"
#include "server/cli/commands.h"
#include "server/cli/common.h"

namespace sinkserve::cli {
int RunPerplexity(int argc, char** argv) {
  std::string model_path = "demo", text_file, ids_file;
  int64_t max_tokens = 0, threads = 0;
  bool json = false;
  Flags flags("perplexity",
              "Perplexity of a text, StreamingLLM protocol: tokens are fed one at a time and\n"
              "token i+1 is scored given tokens 0..i; PPL = exp(mean NLL).");
  flags.Add("model", &model_path, "Hugging Face GPT-NeoX checkpoint directory, or demo");
  flags.Add("text-file", &text_file, "text to score (needs the model's tokenizer.json)");
  flags.Add("token-ids-file", &ids_file, "whitespace-separated token ids to score instead");
  flags.Add("max-tokens", &max_tokens, "score only the first N tokens; 0 = all");
  flags.Add("json", &json,
            "print {\"tokens\":N,\"nll_mean\":x,\"ppl\":y,\"token_nll\":[...]}");
  flags.Add("threads", &threads, "CPU threads; 0 = all cores");
  CacheFlags cache_flags;
  cache_flags.AddTo(flags);
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;
  if (flags.was_set("text-file") == flags.was_set("token-ids-file")) {
    return Fail(absl::InvalidArgumentError("give exactly one of --text-file or --token-ids-file"));
  }
  if (max_tokens < 0) return Fail(absl::InvalidArgumentError("--max-tokens must be >= 0"));
  absl::StatusOr<CachePolicy> policy = cache_flags.ToPolicy();
  if (!policy.ok()) return Fail(policy.status());

  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(model_path, threads);
  if (!model.ok()) return Fail(model.status());
  std::vector<int32_t> tokens;
  if (!ids_file.empty()) {
    absl::StatusOr<std::string> text = ReadFile(ids_file);
    if (!text.ok()) return Fail(text.status());
    absl::StatusOr<std::vector<int32_t>> ids = ParseTokenIds(*text, ids_file);
    if (!ids.ok()) return Fail(ids.status());
    tokens = std::move(*ids);
  } else {
    absl::StatusOr<const Tokenizer*> tokenizer = (*model)->RequireTokenizer();
    if (!tokenizer.ok()) return Fail(tokenizer.status());
    absl::StatusOr<std::string> text = ReadFile(text_file);
    if (!text.ok()) return Fail(text.status());
    absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(*text);
    if (!ids.ok()) return Fail(ids.status());
    tokens = std::move(*ids);
  }
  if (max_tokens > 0 && static_cast<int64_t>(tokens.size()) > max_tokens) tokens.resize(max_tokens);
  if (tokens.size() < 2) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("perplexity needs at least 2 tokens, the input has ", tokens.size())));
  }

  const ModelConfig& config = (*model)->config();
  // Only the first n-1 tokens are fed (the last is only predicted).
  const int64_t fed = static_cast<int64_t>(tokens.size()) - 1;
  if (policy->kind == CachePolicy::Kind::kCachePolicyDense) {
    if (fed > config.max_position_embeddings) {
      return Fail(absl::OutOfRangeError(absl::StrCat(
          "the input has ", tokens.size(), " tokens but a dense cache holds the model's context "
          "of ", config.max_position_embeddings, " tokens; pass --max-tokens ",
          config.max_position_embeddings + 1, " or fewer, or drop --dense to stream")));
    }
    policy->dense_capacity_tokens = static_cast<int>(fed);
  }
  Backend& backend = (*model)->backend();
  std::unique_ptr<KvCache> cache = backend.NewCache(*policy);
  std::vector<float> logits(config.vocab_size);
  std::vector<double> token_nll;
  token_nll.reserve(fed);
  ProgressBar progress("perplexity", fed);
  double total = 0.0;
  for (int64_t i = 0; i < fed; ++i) {
    if (absl::Status status =
            backend.Forward(std::span(tokens).subspan(i, 1), *cache, logits, false);
        !status.ok()) {
      return Fail(status);
    }
    const int32_t target = tokens[i + 1];
    if (target >= config.vocab_size) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "token id ", target, " at index ", i + 1, " is outside the vocabulary [0, ",
          config.vocab_size, ")")));
    }
    token_nll.push_back(TokenNll(logits, target));
    total += token_nll.back();
    progress.Update(i + 1);
  }
  progress.Finish();
  const double nll_mean = total / fed;
  const double ppl = std::exp(nll_mean);
  if (json) {
    nlohmann::json out = {{"tokens", tokens.size()}, {"nll_mean", nll_mean}, {"ppl", ppl},
                          {"cache", cache->Describe()}, {"token_nll", token_nll}};
    std::puts(out.dump().c_str());
  } else {
    std::printf("tokens %zu  nll_mean %.6f  ppl %.4f  cache %s\n", tokens.size(), nll_mean, ppl,
                cache->Describe().c_str());
  }
  return kExitOk;
}

}  // namespace sinkserve::cli
