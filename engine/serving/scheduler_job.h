// The scheduler's record of one request (private to scheduler*.cpp): what every request shares
// (Job), and the two kinds, GenerateJob and ScoreJob.
//
// Virtual methods rather than std::variant: the scheduler keeps every job in one running list in
// admission order and treats them alike (admission, prompt chunks, deadlines, cancellation,
// finishing); the kinds differ only at a few points, each one virtual call here that hands the
// job to the Scheduler's method for its kind. A variant would need a visit at each point.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/serving/scheduler.h"
#include "engine/serving/stop_matcher.h"
#include "engine/tokenizer/incremental_detokenizer.h"

namespace sinkserve {

// What every request has, and the progress of feeding its tokens through the model.
struct Scheduler::Job {
  Job(const std::string& request_id, const std::string& client_api, SteadyClock::time_point arrival,
      std::optional<SteadyClock::time_point> deadline)
      : request_id(request_id), client_api(client_api), arrival(arrival), deadline(deadline) {}
  virtual ~Job() = default;

  // At intake: claims the session the request continues, if any (refused: unknown, busy).
  virtual absl::Status Claim(Scheduler& scheduler) { return absl::OkStatus(); }
  // Resolves the request against the sessions and the cache limits (at admission).
  virtual absl::Status Start(Scheduler& scheduler) = 0;
  // Admitted: tells the observer.
  virtual void Started() {}
  // `count` tokens of to_feed went through the model; `logits` as Scheduler::AfterFed says.
  virtual void Fed(Scheduler& scheduler, int count, std::span<float> logits) = 0;
  // Whether a prompt chunk needs every token's logits (else the last one's).
  virtual bool needs_every_logit() const { return false; }
  // A decoding GenerateJob (its next_token is the row's token); nullptr otherwise.
  virtual GenerateJob* decoding() { return nullptr; }
  // Ends a running request (once; later calls do nothing). `reason` and `detail` are a
  // Generate's finish reason; a Score's outcome is its status.
  virtual void Finish(Scheduler& scheduler, FinishReason reason, absl::Status status,
                      std::string detail) = 0;
  // Tells the observer that the request never ran.
  virtual void Refused(absl::Status status, double e2e_seconds) = 0;

  const std::string request_id;
  const std::string client_api;
  const SteadyClock::time_point arrival;
  const std::optional<SteadyClock::time_point> deadline;
  std::shared_ptr<RequestControl> control;

  SessionEntry* entry = nullptr;  // the named session, set at intake
  Session* session = nullptr;     // the stream (entry->session, or a one-shot stream)
  bool finished = false;

  // Tokens to run through the model before sampling: the session's unfed tail (`carried`
  // tokens), then the prompt. For Score: every token but the last.
  std::vector<int32_t> to_feed;
  size_t fed = 0;
  size_t carried = 0;

  SteadyClock::time_point admitted, first_token, last_token;
  double attention_seconds = 0;
};

struct Scheduler::GenerateJob final : Job {
  GenerateJob(GenerateSpec spec, std::shared_ptr<GenerateObserver> observer)
      : Job(spec.request_id, spec.client_api, spec.arrival, spec.deadline),
        spec(std::move(spec)),
        observer(std::move(observer)) {}

  absl::Status Claim(Scheduler& scheduler) override { return scheduler.ClaimSession(*this); }
  absl::Status Start(Scheduler& scheduler) override { return scheduler.StartGenerate(*this); }
  void Started() override { observer->OnStarted(entry != nullptr ? entry->id : ""); }
  void Fed(Scheduler& scheduler, int count, std::span<float> logits) override {
    scheduler.GenerateFed(*this, count, logits);
  }
  GenerateJob* decoding() override { return is_decoding ? this : nullptr; }
  void Finish(Scheduler& scheduler, FinishReason reason, absl::Status status,
              std::string detail) override {
    scheduler.FinishGenerate(*this, reason, std::move(status), std::move(detail));
  }
  void Refused(absl::Status status, double e2e_seconds) override;

  const GenerateSpec spec;
  const std::shared_ptr<GenerateObserver> observer;
  bool is_decoding = false;  // the prompt is fed; next_token is sampled and not yet fed
  int32_t next_token = -1;
  std::optional<Sampler> own_sampler;  // when the request has its own seed
  Sampler* sampler = nullptr;
  std::optional<IncrementalDetokenizer> detokenizer;
  std::optional<StopStringMatcher> stop_matcher;
  int64_t generated = 0;
  int64_t evicted_at_start = 0;
};

struct Scheduler::ScoreJob final : Job {
  ScoreJob(ScoreSpec spec, std::shared_ptr<ScoreObserver> observer)
      : Job(spec.request_id, spec.client_api, spec.arrival, spec.deadline),
        spec(std::move(spec)),
        observer(std::move(observer)) {}

  absl::Status Start(Scheduler& scheduler) override { return scheduler.StartScore(*this); }
  void Fed(Scheduler& scheduler, int count, std::span<float> logits) override {
    scheduler.ScoreFed(*this, count, logits);
  }
  bool needs_every_logit() const override { return true; }
  void Finish(Scheduler& scheduler, FinishReason, absl::Status status, std::string) override {
    scheduler.FinishScore(*this, std::move(status));
  }
  void Refused(absl::Status status, double e2e_seconds) override;

  const ScoreSpec spec;
  const std::shared_ptr<ScoreObserver> observer;
  double nll_sum = 0;
  int64_t scored = 0;
  int64_t reported = 0;  // scored tokens at the last progress event
  std::vector<double> pending_nll;
  std::vector<std::vector<TokenLogprob>> pending_top;
};

}  // namespace sinkserve
