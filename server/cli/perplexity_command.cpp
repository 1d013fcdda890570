// sinkserve perplexity: per-token NLL of a text, fed one token at a time (docs/cache-semantics.md).
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "engine/perplexity.h"
#include "common/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/cli/commands.h"
#include "server/cli/model_flags.h"
#include "common/cli/command.h"
#include "common/cli/progress_bar.h"
#include "common/base/file.h"

namespace sinkserve::cli {
namespace {

// The StreamingLLM protocol (docs/cache-semantics.md): feed tokens one at a time;
// nll[i] = NLL of token i+1.
absl::Status TokenByTokenNll(Backend& backend, std::span<const int32_t> tokens, KvCache& cache,
                             const ModelConfig& config, std::vector<double>* nll) {
  std::vector<float> logits(config.vocab_size);
  ProgressBar progress("perplexity", static_cast<int64_t>(tokens.size()) - 1);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    if (absl::Status status = backend.Forward(tokens.subspan(i, 1), cache, logits, false);
        !status.ok()) {
      return status;
    }
    nll->push_back(TokenNll(logits, tokens[i + 1]));
    progress.Update(static_cast<int64_t>(i) + 1);
  }
  progress.Finish();
  return absl::OkStatus();
}

// The seed's protocol (docs/benchmark-protocol.md), for side-by-side comparison only: independent
// chunks of `chunk` tokens, each run from an empty dense cache; within a chunk every token but the
// first is scored given the chunk's earlier tokens (the first token of a chunk is never predicted).
absl::Status ChunkedNll(Backend& backend, std::span<const int32_t> tokens, int chunk,
                        const ModelConfig& config, std::vector<double>* nll) {
  if (chunk < 2 || chunk > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--chunk-protocol must be in [2, ", config.max_position_embeddings, "], got ", chunk));
  }
  const size_t vocab = config.vocab_size;
  std::vector<float> logits(static_cast<size_t>(chunk) * vocab);
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, backend.NewDenseCache(chunk));
  ProgressBar progress("perplexity (chunked)", static_cast<int64_t>(tokens.size()));
  for (size_t begin = 0; begin + 1 < tokens.size(); begin += chunk) {
    const size_t length = std::min<size_t>(chunk, tokens.size() - begin);
    cache->Reset();
    if (absl::Status status =
            backend.Forward(tokens.subspan(begin, length), *cache, logits, /*all_logits=*/true);
        !status.ok()) {
      return status;
    }
    for (size_t i = 0; i + 1 < length; ++i) {
      nll->push_back(TokenNll(std::span(logits).subspan(i * vocab, vocab), tokens[begin + i + 1]));
    }
    progress.Update(static_cast<int64_t>(begin + length));
  }
  progress.Finish();
  return absl::OkStatus();
}

}  // namespace

int RunPerplexity(int argc, char** argv) {
  std::string text_file, ids_file;
  int64_t max_tokens = 0;
  bool json = false;
  Flags flags("perplexity",
              "Perplexity of a text, StreamingLLM protocol: tokens are fed one at a time and\n"
              "token i+1 is scored given tokens 0..i; PPL = exp(mean NLL).");
  flags.Add("text-file", &text_file, "text to score (needs the model's tokenizer.json)");
  flags.Add("token-ids-file", &ids_file, "whitespace-separated token ids to score instead");
  flags.Add("max-tokens", &max_tokens, "score only the first N tokens; 0 = all");
  flags.Add("json", &json,
            "print {\"tokens\":N,\"nll_mean\":x,\"ppl\":y,\"token_nll\":[...],"
            "\"weights_bytes\":B,\"peak_rss_bytes\":R,...}");
  int64_t chunk_protocol = 0;
  flags.Add("chunk-protocol", &chunk_protocol,
            "score in independent N-token chunks instead (the seed report's protocol, e.g. 512;"
            " for comparison only; ignores the cache flags); 0 = off");
  CacheFlags cache_flags;
  cache_flags.AddTo(flags);
  ModelFlags model_flags;
  model_flags.AddTo(flags);
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;
  absl::StatusOr<ModelOptions> model_options = model_flags.ToOptions();
  if (!model_options.ok()) return Fail(model_options.status());
  if (flags.was_set("text-file") == flags.was_set("token-ids-file")) {
    return Fail(absl::InvalidArgumentError("give exactly one of --text-file or --token-ids-file"));
  }
  if (max_tokens < 0) return Fail(absl::InvalidArgumentError("--max-tokens must be >= 0"));
  absl::StatusOr<CachePolicy> policy = ToPolicy(cache_flags);
  if (!policy.ok()) return Fail(policy.status());

  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(*model_options);
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
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= config.vocab_size) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "token id ", tokens[i], " at index ", i, " is outside the vocabulary [0, ",
          config.vocab_size, ")")));
    }
  }
  Backend& backend = (*model)->backend();
  std::vector<double> token_nll;
  std::string cache_description;
  if (chunk_protocol > 0) {
    absl::Status status = ChunkedNll(backend, tokens, static_cast<int>(std::min<int64_t>(
                                                          chunk_protocol, 1 << 30)),
                                     config, &token_nll);
    if (!status.ok()) return Fail(status);
    cache_description = absl::StrCat("chunk protocol (", chunk_protocol, "-token chunks, dense)");
  } else {
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
    absl::StatusOr<std::unique_ptr<KvCache>> cache = backend.NewCache(*policy);
    if (!cache.ok()) return Fail(cache.status());
    if (absl::Status status = TokenByTokenNll(backend, tokens, **cache, config, &token_nll);
        !status.ok()) {
      return Fail(status);
    }
    cache_description = (*cache)->Describe();
  }
  double total = 0.0;
  for (double nll : token_nll) total += nll;
  const size_t fed = token_nll.size();
  const double nll_mean = total / fed;
  const double ppl = std::exp(nll_mean);
  if (json) {
    nlohmann::json out = {{"tokens", tokens.size()},
                          {"nll_mean", nll_mean},
                          {"ppl", ppl},
                          {"cache", cache_description},
                          {"weights", (*model)->weights_format()},
                          {"backend", (*model)->backend().name()},
                          {"weights_bytes", (*model)->weights_bytes()},
                          {"peak_rss_bytes", PeakRssBytes()},
                          {"token_nll", token_nll}};
    std::puts(out.dump().c_str());
  } else {
    std::printf("tokens %zu  nll_mean %.6f  ppl %.4f  cache %s  weights %s (%llu bytes)  "
                "peak RSS %.1f MB\n",
                tokens.size(), nll_mean, ppl, cache_description.c_str(),
                (*model)->weights_format().c_str(),
                static_cast<unsigned long long>((*model)->weights_bytes()), PeakRssBytes() / 1e6);
  }
  return kExitOk;
}

}  // namespace sinkserve::cli
