// The load generator: Generate streams against a sinkserve server over the gRPC callback API,
// closed loop (N conversations always in flight) or open loop (Poisson / gamma arrivals),
// timing every request from the stream itself with the client's clock.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/connection.h"
#include "client/prompt_source.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"

namespace sinkserve::bench {

struct LoadOptions {
  // Closed loop: this many conversations in flight; a new one starts when one ends.
  int concurrency = 1;
  // Open loop when > 0: conversations arrive at this mean rate (per second), the gaps drawn
  // from a gamma distribution of shape `burstiness` (1 = Poisson; < 1 burstier, > 1 steadier),
  // whatever the server's speed.
  double rate = 0;
  double burstiness = 1;
  // Stop starting conversations after this many (0 = no limit) or this long (0 = no limit);
  // those in flight finish and count.
  int conversations = 0;
  double duration_s = 0;
  // Generate requests per conversation: the first keeps its stream as a session, the next
  // ones continue it with a new prompt each (multi-turn chat on a streaming cache). Each
  // session is named by the client, "bench-<run>-<conversation>", sent as x-session-id.
  int turns = 1;
  int max_new_tokens = 128;
  // Sampling: 0 = greedy. ignore_eos keeps every output at max_new_tokens tokens.
  double temperature = 0;
  bool ignore_eos = true;
  uint64_t seed = 0;
  // Per-request gRPC deadline.
  double request_timeout_s = 600;
  // Cache policy of each conversation's stream; unset = the server's default.
  std::optional<v1::CachePolicy> cache_policy;
};

// One Generate request as the client saw it. Times are client clocks (steady_clock).
struct RequestRecord {
  int conversation = 0;
  int turn = 0;
  double start_s = 0;  // since the run started
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error;  // the status message when not OK
  int prompt_tokens = 0;  // tokens sent
  int output_tokens = 0;  // token ids received in the stream
  double ttft_ms = 0;     // send to the first message carrying a token
  double e2e_ms = 0;      // send to the end of the stream
  double tpot_ms = 0;     // (last token - first token) / (output_tokens - 1); 0 below 2 tokens
  // Gaps between consecutive messages carrying tokens. A message may carry several tokens
  // when the client read slower than the server wrote (the server merges them): the gap is
  // then one entry, as in vLLM's bench (ITL per received chunk).
  std::vector<double> itl_ms;
  std::optional<v1::GenerateResult> server_result;  // the final message, when it came
};

struct LoadResult {
  std::vector<RequestRecord> records;  // in completion order
  double duration_s = 0;               // first send to last completion
  // Why the run stopped early (the server became unavailable), else empty. The records up to
  // then are kept.
  std::string aborted;
};

// Called from the driver thread after each completed request (for a progress bar).
using ProgressCallback = std::function<void(const LoadResult& so_far, double elapsed_s)>;

// Runs the load. Returns when every started request has finished.
LoadResult RunLoad(const Connection& connection, PromptSource& prompts, const LoadOptions& options,
                   const ProgressCallback& progress = nullptr);
// The same load over the OpenAI-compatible HTTP API (openai_client.h); sessions are not closed
// at the end of a conversation (that API has no call for it: they expire).
class OpenAiClient;
LoadResult RunLoad(OpenAiClient& client, PromptSource& prompts, const LoadOptions& options,
                   const ProgressCallback& progress = nullptr);

}  // namespace sinkserve::bench
