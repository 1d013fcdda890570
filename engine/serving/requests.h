// The public request types of the scheduler: what a caller submits (GenerateSpec, ScoreSpec),
// the events it hears back (TokenDelta, ScoreProgress), how each request ends (GenerateResult,
// ScoreResult) and the observers that receive them. Nothing here knows the transport.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/kv_cache.h"
#include "engine/perplexity.h"
#include "engine/serving/sampling_overrides.h"
#include "engine/serving/session_table.h"
#include "engine/serving/steady_clock.h"

namespace sinkserve {

enum class FinishReason : uint8_t {
  kFinishReasonStop,       // a stop token or stop string
  kFinishReasonLength,     // max_new_tokens, or a full dense cache
  kFinishReasonCancelled,  // client cancel, deadline, session closed, server drained
  kFinishReasonError,      // the engine failed
};
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "cancelled", "error"

// A Generate request, validated by the caller (token ids in the vocabulary, sampling in range,
// stop strings valid UTF-8).
struct GenerateSpec {
  std::string request_id;
  // Who sent it, as an opaque label for the listener (metrics): the engine never reads it.
  std::string client_api;
  std::string session_id;             // continue this session; "" = a new stream
  bool keep_session = false;          // keep a new stream as a session
  std::string new_session_id;         // keep_session: its id; "" = a random one
  std::optional<CachePolicy> policy;  // of a new stream; unset = default_policy
  std::vector<int32_t> prompt;        // may be empty (see GenerateRequest in the proto)
  SamplingOverrides sampling;         // over the session's defaults
  int max_new_tokens = 128;
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_token_ids;  // the caller adds end-of-text unless told not to
  bool return_logprobs = false;
  int top_logprobs = 0;  // with return_logprobs: also the N most likely tokens of each step
  SteadyClock::time_point arrival = SteadyClock::now();
  std::optional<SteadyClock::time_point> deadline;
};

// New output of a Generate since the previous event.
struct TokenDelta {
  std::string text;  // valid UTF-8, stop strings held back / removed
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;  // parallel to token_ids when asked
  // Parallel to token_ids when top_logprobs > 0: the most likely tokens at each step (before
  // sampling changed the logits).
  std::vector<std::vector<TokenLogprob>> top_logprobs;
};

// A request's own timings, measured on the scheduler thread (seconds).
struct RequestTimings {
  double queue_seconds = 0;                  // arrival → admitted
  double time_to_first_token_seconds = 0;    // arrival → first token
  double time_per_output_token_seconds = 0;  // (last − first token) / (tokens − 1)
  double attention_seconds = 0;              // its share of the steps' attention time
  double e2e_seconds = 0;                    // arrival → finished
};

struct GenerateResult {
  // OK for stop and length; else why it ended (CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE when the
  // server drained, or the error: NOT_FOUND, ABORTED, OUT_OF_RANGE, RESOURCE_EXHAUSTED, ...).
  absl::Status status;
  // True when the request never ran (refused at admission: unknown/busy session, limits, ...):
  // then only `status` and `timings.e2e_seconds` mean anything.
  bool rejected = false;
  FinishReason finish_reason = FinishReason::kFinishReasonLength;
  std::string finish_detail;
  std::string request_id;
  std::string session_id;  // "" for a one-shot stream
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t evicted_tokens = 0;
  RequestTimings timings;
  std::optional<SessionInfo> session;  // the kept session after the request
};

// Receives a Generate's events. Every call comes from the scheduler thread and must not block.
class GenerateObserver {
 public:
  virtual ~GenerateObserver() = default;
  // Admitted: the request runs on session `session_id` ("" for a one-shot stream).
  virtual void OnStarted(const std::string& session_id) {}
  virtual void OnTokens(TokenDelta delta) = 0;
  virtual void OnFinished(GenerateResult result) = 0;  // exactly once, last
};

// A Score request: perplexity of `tokens` (≥ 2, in the vocabulary) under a cache policy.
struct ScoreSpec {
  std::string request_id;
  std::string client_api;  // as GenerateSpec's
  std::vector<int32_t> tokens;
  std::optional<CachePolicy> policy;  // unset = default_policy; dense 0 = tokens − 1
  bool return_token_nll = false;
  int top_logprobs = 0;  // with return_token_nll: also the N most likely tokens per position
  int progress_interval_tokens = 1024;
  SteadyClock::time_point arrival = SteadyClock::now();
  std::optional<SteadyClock::time_point> deadline;
};

struct ScoreProgress {
  int64_t scored_tokens = 0;
  int64_t total_tokens = 0;
  std::vector<double> token_nll;                        // since the previous event, when asked
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // parallel to token_nll, when asked
};

struct ScoreResult {
  absl::Status status;
  bool rejected = false;
  std::string request_id;
  int64_t tokens = 0;
  int64_t scored_tokens = 0;
  double nll_mean = 0;
  double perplexity = 0;
  int64_t evicted_tokens = 0;
  std::string cache_description;
  RequestTimings timings;
};

class ScoreObserver {
 public:
  virtual ~ScoreObserver() = default;
  virtual void OnProgress(ScoreProgress progress) = 0;
  virtual void OnFinished(ScoreResult result) = 0;  // exactly once, last
};

}  // namespace sinkserve
