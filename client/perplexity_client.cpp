#include "client/perplexity_client.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "client/connection.h"

namespace sinkserve::bench {

absl::StatusOr<PerplexityResult> ScorePerplexity(
    const Connection& connection, const std::vector<int32_t>& token_ids, int chunk_tokens,
    const std::optional<v1::CachePolicy>& policy,
    const std::function<void(int64_t, int64_t)>& progress) {
  const size_t chunk = chunk_tokens > 0 ? static_cast<size_t>(chunk_tokens) : token_ids.size();
  PerplexityResult result;
  result.tokens = static_cast<int64_t>(token_ids.size());
  result.chunks = 0;
  const int64_t total_scored = static_cast<int64_t>(token_ids.size()) -
                               static_cast<int64_t>((token_ids.size() + chunk - 1) / chunk);
  double nll_sum = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t begin = 0; begin < token_ids.size(); begin += chunk) {
    const size_t end = std::min(begin + chunk, token_ids.size());
    if (end - begin < 2) break;  // a one-token tail scores nothing
    v1::ScoreRequest request;
    for (size_t i = begin; i < end; ++i) request.add_token_ids(static_cast<uint32_t>(token_ids[i]));
    if (policy) *request.mutable_cache_policy() = *policy;
    grpc::ClientContext context;
    connection.Prepare(context);
    auto reader = connection.stub->Score(&context, request);
    v1::ScoreResponse response;
    std::optional<v1::ScoreResult> chunk_result;
    while (reader->Read(&response)) {
      if (progress) progress(result.scored_tokens + response.scored_tokens(), total_scored);
      if (response.has_result()) chunk_result = response.result();
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) {
      return FromGrpc(status, absl::StrCat("Score of tokens [", begin, ", ", end, ")"));
    }
    if (!chunk_result) return absl::InternalError("Score ended without a result");
    nll_sum += chunk_result->nll_mean() * chunk_result->scored_tokens();
    result.scored_tokens += chunk_result->scored_tokens();
    result.attention_ms += chunk_result->attention_time_ms();
    result.cache_description = chunk_result->cache_description();
    ++result.chunks;
  }
  if (result.scored_tokens == 0) {
    return absl::InvalidArgumentError("the text has fewer than 2 tokens: nothing to score");
  }
  result.e2e_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                            start).count();
  result.nll_mean = nll_sum / static_cast<double>(result.scored_tokens);
  result.perplexity = std::exp(result.nll_mean);
  return result;
}

}  // namespace sinkserve::bench
