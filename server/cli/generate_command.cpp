// sinkserve generate: stream a continuation of a prompt to stdout.
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/sampler.h"
#include "nlohmann/json.hpp"
#include "server/cli/commands.h"
#include "server/cli/model_flags.h"
#include "common/cli/command.h"

namespace sinkserve::cli {
namespace {

// Prompt tokens fed per forward call: larger chunks read the weights fewer times.
constexpr int kPrefillChunk = 256;

}  // namespace

int RunGenerate(int argc, char** argv) {
  std::string prompt;
  int64_t max_new_tokens = 128, top_k = 0, seed = 0;
  double temperature = 1.0, top_p = 1.0, repetition_penalty = 1.0;
  bool ignore_eos = false, json = false;
  Flags flags("generate", "Streams a continuation of --prompt to stdout (timings on stderr).");
  flags.Add("prompt", &prompt, "the text to continue");
  flags.Add("max-new-tokens", &max_new_tokens, "tokens to generate at most");
  flags.Add("temperature", &temperature, "sampling temperature; 0 = greedy");
  flags.Add("top-k", &top_k, "sample from the k most likely tokens; 0 = all");
  flags.Add("top-p", &top_p, "nucleus sampling mass; 1 = off");
  flags.Add("repetition-penalty", &repetition_penalty, "penalty for repeated tokens; 1 = off");
  flags.Add("seed", &seed, "random seed: same seed and inputs, same tokens");
  flags.Add("ignore-eos", &ignore_eos, "keep generating past the end-of-text token");
  flags.Add("json", &json,
            "print one JSON object instead of the text: token ids, text, backend and timings "
            "(prefill_ms, ttft_ms, tpot_ms, prefill_tok_s, decode_tok_s)");
  CacheFlags cache_flags;
  cache_flags.AddTo(flags);
  ModelFlags model_flags;
  model_flags.AddTo(flags);
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;
  absl::StatusOr<ModelOptions> model_options = model_flags.ToOptions();
  if (!model_options.ok()) return Fail(model_options.status());

  SamplingParams params;
  params.temperature = static_cast<float>(temperature);
  params.top_k = static_cast<int>(top_k);
  params.top_p = static_cast<float>(top_p);
  params.repetition_penalty = static_cast<float>(repetition_penalty);
  params.seed = static_cast<uint64_t>(seed);
  if (absl::Status status = params.Validate(); !status.ok()) return Fail(status);
  if (max_new_tokens < 0) {
    return Fail(absl::InvalidArgumentError("--max-new-tokens must be >= 0"));
  }

  absl::StatusOr<CachePolicy> policy = ToPolicy(cache_flags);
  if (!policy.ok()) return Fail(policy.status());
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(*model_options);
  if (!model.ok()) return Fail(model.status());
  absl::StatusOr<const Tokenizer*> tokenizer = (*model)->RequireTokenizer();
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  absl::StatusOr<std::vector<int32_t>> prompt_ids = (*tokenizer)->Encode(prompt);
  if (!prompt_ids.ok()) return Fail(prompt_ids.status());
  std::vector<int32_t> tokens = *prompt_ids;
  const std::optional<int32_t> eos = (*tokenizer)->eos_token_id();
  if (tokens.empty()) {
    // An empty prompt starts from the end-of-text token, as HF does for unconditional text.
    if (!eos) return Fail(absl::InvalidArgumentError("--prompt is empty"));
    tokens.push_back(*eos);
  }

  const ModelConfig& config = (*model)->config();
  if (policy->kind == CachePolicy::Kind::kCachePolicyDense) {
    // A dense cache only as large as this request needs, within the model's context.
    policy->dense_capacity_tokens = static_cast<int>(std::min<int64_t>(
        config.max_position_embeddings, tokens.size() + max_new_tokens));
    if (static_cast<int64_t>(tokens.size()) > config.max_position_embeddings) {
      return Fail(absl::OutOfRangeError(absl::StrCat(
          "the prompt has ", tokens.size(), " tokens; a dense cache holds the model's context of ",
          config.max_position_embeddings, " (drop --dense to stream with sinks + window)")));
    }
  }
  Backend& backend = (*model)->backend();
  absl::StatusOr<std::unique_ptr<KvCache>> new_cache = backend.NewCache(*policy);
  if (!new_cache.ok()) return Fail(new_cache.status());
  std::unique_ptr<KvCache> cache = std::move(*new_cache);
  std::vector<float> logits(config.vocab_size);
  Sampler sampler(params);
  IncrementalDetokenizer detokenizer(**tokenizer);

  const auto start = std::chrono::steady_clock::now();
  if (absl::Status status = FeedTokens(backend, tokens, *cache, logits, kPrefillChunk);
      !status.ok()) {
    return Fail(status);
  }
  const auto prefill_end = std::chrono::steady_clock::now();
  std::string generated_text;
  // The text goes to stdout as it comes, or into the JSON at the end.
  auto emit = [&](const std::string& text) {
    if (json) {
      generated_text += text;
    } else {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
  };
  std::chrono::steady_clock::time_point first_token_time;
  int64_t generated = 0;
  std::string finish_reason = "length";
  while (generated < max_new_tokens) {
    const int32_t next = sampler.Sample(logits, tokens);
    tokens.push_back(next);
    ++generated;
    if (generated == 1) first_token_time = std::chrono::steady_clock::now();
    if (eos && next == *eos && !ignore_eos) {
      finish_reason = "stop (end of text)";
      break;
    }
    emit(detokenizer.Push(next));
    if (generated == max_new_tokens) break;
    if (cache->MaxStepTokens() < 1) {
      finish_reason = "length (dense cache full)";
      break;
    }
    const int32_t step[1] = {next};
    if (absl::Status status = backend.Forward(step, *cache, logits, false); !status.ok()) {
      return Fail(status);
    }
  }
  emit(detokenizer.Finish());
  if (!json) std::fputc('\n', stdout);

  const auto end = std::chrono::steady_clock::now();
  const double total = std::chrono::duration<double>(end - start).count();
  const double ttft = generated > 0 ? std::chrono::duration<double>(first_token_time - start).count()
                                    : total;
  const double tpot = generated > 1 ? (total - ttft) / (generated - 1) : 0.0;
  std::fprintf(stderr,
               "sinkserve: %zu prompt + %lld generated tokens, finish: %s; TTFT %.1f ms, "
               "TPOT %.2f ms (%.1f tok/s); cache %s, %d cached, %lld evicted; peak RSS %.1f MB\n",
               prompt_ids->empty() ? size_t{1} : prompt_ids->size(),
               static_cast<long long>(generated), finish_reason.c_str(), ttft * 1e3, tpot * 1e3,
               tpot > 0 ? 1.0 / tpot : 0.0, cache->Describe().c_str(), cache->tokens_cached(),
               static_cast<long long>(cache->tokens_evicted()), PeakRssBytes() / 1e6);
  if (json) {
    const size_t fed = tokens.size() - generated;
    const double prefill = std::chrono::duration<double>(prefill_end - start).count();
    const nlohmann::json out = {
        {"prompt_ids", std::vector<int32_t>(tokens.begin(), tokens.begin() + fed)},
        {"ids", std::vector<int32_t>(tokens.begin() + fed, tokens.end())},
        {"text", generated_text},
        {"finish_reason", finish_reason},
        {"backend", backend.name()},
        {"weights", (*model)->weights_format()},
        {"weights_bytes", (*model)->weights_bytes()},
        {"prefill_ms", prefill * 1e3},
        {"prefill_tok_s", prefill > 0 ? fed / prefill : 0.0},
        {"ttft_ms", ttft * 1e3},
        {"tpot_ms", tpot * 1e3},
        {"decode_tok_s", tpot > 0 ? 1.0 / tpot : 0.0},
        {"peak_rss_bytes", PeakRssBytes()}};
    // A text cut mid-character by the token limit still prints (as U+FFFD).
    std::puts(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return kExitOk;
}

}  // namespace sinkserve::cli
