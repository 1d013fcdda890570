// The scheduler's record of one request (private to scheduler*.cpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/serving/scheduler.h"
#include "engine/serving/stop_matcher.h"

namespace sinkserve {

// One Generate or Score request and its progress.
struct Scheduler::Job {
  bool is_score = false;
  GenerateSpec generate;
  ScoreSpec score;
  std::shared_ptr<GenerateObserver> generate_observer;
  std::shared_ptr<ScoreObserver> score_observer;
  std::shared_ptr<RequestControl> control;

  SessionEntry* entry = nullptr;  // the named session, set at intake
  Session* session = nullptr;     // the stream (entry->session, or a one-shot stream)
  bool finished = false;

  // Tokens to run through the model before sampling: the session's unfed tail (`carried`
  // tokens), then the prompt. For Score: every token but the last.
  std::vector<int32_t> to_feed;
  size_t fed = 0;
  size_t carried = 0;

  // Generate.
  bool decoding = false;    // the prompt is fed; next_token is sampled and not yet fed
  int32_t next_token = -1;
  std::optional<Sampler> own_sampler;  // when the request has its own seed
  Sampler* sampler = nullptr;
  std::optional<IncrementalDetokenizer> detokenizer;
  std::optional<StopStringMatcher> stop_matcher;
  int64_t generated = 0;
  int64_t evicted_at_start = 0;

  // Score.
  double nll_sum = 0;
  int64_t scored = 0;
  int64_t reported = 0;  // scored tokens at the last progress event
  std::vector<double> pending_nll;
  std::vector<std::vector<TokenLogprob>> pending_top;

  SteadyClock::time_point admitted, first_token, last_token;
  double attention_seconds = 0;

  const std::string& request_id() const {
    return is_score ? score.request_id : generate.request_id;
  }
  SteadyClock::time_point arrival() const { return is_score ? score.arrival : generate.arrival; }
  const std::optional<SteadyClock::time_point>& deadline() const {
    return is_score ? score.deadline : generate.deadline;
  }
};

}  // namespace sinkserve
