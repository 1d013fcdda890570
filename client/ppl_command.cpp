// sinkserve-bench ppl: perplexity of a text file through the server's Score RPC.
#include <cstdio>

#include "client/command_common.h"
#include "common/cli/progress_bar.h"
#include "client/commands.h"
#include "client/connection.h"
#include "client/perplexity_client.h"
#include "client/prompt_source.h"
#include "nlohmann/json.hpp"

namespace sinkserve::bench {

int RunPplCommand(int argc, char** argv) {
  std::string target = "127.0.0.1:50051", text_file, tokenizer_path, json_path;
  int64_t max_tokens = 0, chunk_protocol = 0;
  cli::CacheFlags cache;
  cli::Flags flags("ppl",
                   "Perplexity of a text file under the server's cache policy (or the one "
                   "given), through the Score RPC.\nDefault: the StreamingLLM protocol, token i+1 "
                   "scored given tokens 0..i. --chunk-protocol 512\n--max-tokens 1000 mirrors the "
                   "seed report: independent 512-token chunks (first token of each\nunscored), "
                   "each its own Score request under the same cache policy.",
                   kProgram);
  flags.Add("target", &target, "server address host:port");
  ClientSecurity security;
  security.AddTo(flags);
  flags.Add("text-file", &text_file, "the text to score (required)");
  flags.Add("max-tokens", &max_tokens, "score only the first N tokens; 0 = all");
  flags.Add("chunk-protocol", &chunk_protocol,
            "N > 0: independent N-token chunks (the seed's protocol); 0 = token by token");
  flags.Add("tokenizer", &tokenizer_path,
            "the served model's tokenizer.json (not needed for the demo model)");
  cache.AddTo(flags);
  flags.Add("json", &json_path, "also write the result as JSON to this file (- = stdout)");
  if (int exit = cli::ParseFlagsOrExit(flags, argc, argv); exit >= 0) return exit;
  absl::StatusOr<std::optional<v1::CachePolicy>> policy = RequestedPolicy(cache, flags);
  if (!policy.ok() || text_file.empty() || max_tokens < 0 || chunk_protocol < 0 ||
      chunk_protocol == 1) {
    std::fprintf(stderr, "error: %s\n",
                 !policy.ok() ? std::string(policy.status().message()).c_str()
                 : text_file.empty() ? "--text-file is required"
                                     : "--max-tokens must be >= 0, --chunk-protocol 0 or >= 2");
    return cli::kExitUsage;
  }
  absl::StatusOr<Connection> connection = Connect(target, security);
  if (!connection.ok()) return cli::Fail(connection.status());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer(tokenizer_path, connection->model);
  if (!tokenizer.ok()) return cli::Fail(tokenizer.status());
  absl::StatusOr<std::vector<int32_t>> ids = TokenizeFiles(**tokenizer, {text_file}, max_tokens);
  if (!ids.ok()) return cli::Fail(ids.status());

  cli::ProgressBar progress("scoring", static_cast<int64_t>(ids->size()));
  absl::StatusOr<PerplexityResult> result =
      ScorePerplexity(*connection, *ids, static_cast<int>(chunk_protocol), *policy,
                      [&](int64_t scored, int64_t) { progress.Update(scored); });
  progress.Finish();
  if (!result.ok()) return cli::Fail(result.status());
  std::printf("%s: %lld tokens, %lld scored in %d request(s), %s: nll_mean %.4f, PPL %.4f "
              "(%.1f s; server attention %.1f ms)%s\n",
              text_file.c_str(), static_cast<long long>(result->tokens),
              static_cast<long long>(result->scored_tokens), result->chunks,
              result->cache_description.c_str(), result->nll_mean, result->perplexity,
              result->e2e_ms / 1000, result->attention_ms,
              connection->model.demo() ? " [DEMO model: random weights]" : "");
  if (!json_path.empty()) {
    nlohmann::ordered_json json = {{"text_file", text_file},
                                   {"tokens", result->tokens},
                                   {"scored_tokens", result->scored_tokens},
                                   {"chunk_protocol", chunk_protocol},
                                   {"chunks", result->chunks},
                                   {"cache", result->cache_description},
                                   {"nll_mean", result->nll_mean},
                                   {"ppl", result->perplexity},
                                   {"e2e_ms", result->e2e_ms},
                                   {"attention_ms", result->attention_ms}};
    if (absl::Status status = WriteOutput(json_path, json.dump(2) + "\n"); !status.ok()) {
      return cli::Fail(status);
    }
  }
  return cli::kExitOk;
}

}  // namespace sinkserve::bench
