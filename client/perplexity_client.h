// Perplexity through the Score RPC: the StreamingLLM token-by-token protocol (one Score over
// the whole text) or the seed's chunk protocol, done on the client.
//
// Chunk protocol, client-side: the text is cut into independent `chunk_tokens` chunks, each
// scored by its own Score request from an empty cache under the same cache policy; the first
// token of each chunk is not scored (as HF-style evaluation, and the seed, did). With a dense
// policy this is exactly `sinkserve perplexity --chunk-protocol N`; with a streaming policy each
// chunk is streamed through sink + window, which is what made the seed's streaming rows differ
// from its baseline. No proto change was needed.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/connection.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"

namespace sinkserve::bench {

struct PerplexityResult {
  int64_t tokens = 0;         // input tokens
  int64_t scored_tokens = 0;  // tokens whose NLL counts
  double nll_mean = 0;
  double perplexity = 0;
  int chunks = 1;
  double e2e_ms = 0;        // client clock, all requests
  double attention_ms = 0;  // the server's measure, summed over the requests
  std::string cache_description;
};

// Scores `token_ids`. `chunk_tokens` 0 = token by token over the whole text. `policy` unset =
// the server's default. `progress(scored, total)` is called as the server reports progress.
absl::StatusOr<PerplexityResult> ScorePerplexity(
    const Connection& connection, const std::vector<int32_t>& token_ids, int chunk_tokens,
    const std::optional<v1::CachePolicy>& policy,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace sinkserve::bench
