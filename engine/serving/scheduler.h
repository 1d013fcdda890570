// Scheduler: the one thread that owns the engine — the model, its backend and every session's
// KV cache (docs/architecture.md, docs/conventions.md §6-7). Transport threads submit requests and
// session commands and receive token events; nothing here knows gRPC.
//
// Continuous batching. Each engine step
//   1. takes new requests and session commands (between steps, never during one),
//   2. admits waiting requests while fewer than max_batch run,
//   3. feeds prompt chunks of prefilling requests, at most prefill_chunk_tokens tokens per step
//      in total (oldest request first), so a long prompt never stalls the others for long,
//   4. runs ONE Backend::ForwardBatch over every row that needs a single token: the decode
//      step of each generating request, plus prefilling requests whose next exact step is one
//      token (a full streaming window, the last prompt token, an exhausted chunk budget);
//      when every row is a plain greedy decode (no penalty, no logprobs), ForwardBatchGreedy,
//      so a device backend copies back token ids instead of logits,
//   5. samples, emits token events, and finishes requests (stop, length, cancel, deadline).
// Batched rows are bit-identical to single steps, so batching never changes a token.
//
// Requests per session: one at a time. A request for a busy session is refused (ABORTED),
// not queued: two turns racing on one stream would have no defined order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/serving/session_table.h"
#include "common/base/thread_pool.h"

namespace sinkserve {

enum class FinishReason : uint8_t {
  kFinishReasonStop,       // a stop token or stop string
  kFinishReasonLength,     // max_new_tokens, or a full dense cache
  kFinishReasonCancelled,  // client cancel, deadline, session closed, server drained
  kFinishReasonError,      // the engine failed
};
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct SchedulerOptions {
  int max_batch = 16;             // requests running at once
  int max_queue = 64;             // requests waiting beyond the free slots; more → RESOURCE_EXHAUSTED
  int prefill_chunk_tokens = 128; // prompt tokens fed per step in multi-token chunks, all requests
  CachePolicy default_policy;     // of new streams that name none
  SessionTable::Limits session_limits;
  size_t history_limit_tokens = 4096;  // per session, for the repetition penalty
  // Threads that sample the rows of a batched step in parallel (0 = the machine's cores, at
  // most 8): a sampled token costs ~0.3–0.6 ms of host time at a 50k vocabulary, so 64 rows
  // would take longer than a GPU decode step on one thread.
  int sampling_threads = 0;
  // Where sessions go when they leave memory (`--session-store`); nullptr = nowhere (evicted
  // sessions are lost). The caller owns it; it must outlive the scheduler.
  PersistentSessionStore* session_store = nullptr;
  bool persist_every_turn = false;               // --session-persist turn
  std::chrono::milliseconds session_store_ttl{0};  // --session-store-ttl-s; 0 = keep files
  std::string server_id;                         // owner of this server's store leases
  SessionStoreListener* store_listener = nullptr;  // hears the store's writes and restores
};

// A Generate request, validated by the caller (token ids in the vocabulary, sampling in range,
// stop strings valid UTF-8).
struct GenerateSpec {
  std::string request_id;
  std::string session_id;              // continue this session; "" = a new stream
  bool keep_session = false;           // keep a new stream as a session
  std::string new_session_id;          // keep_session: its id; "" = a random one
  std::optional<CachePolicy> policy;   // of a new stream; unset = default_policy
  std::vector<int32_t> prompt;         // may be empty (see GenerateRequest in the proto)
  SamplingOverrides sampling;          // over the session's defaults
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
  std::string text;                // valid UTF-8, stop strings held back / removed
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;     // parallel to token_ids when asked
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
  std::vector<double> token_nll;  // since the previous event, when asked
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

enum class StepPhase : uint8_t { kStepPhasePrefill, kStepPhaseDecode };

struct SchedulerGauges {
  int running = 0;            // requests admitted and not finished
  int waiting = 0;            // requests submitted and not admitted
  int sessions = 0;           // named sessions
  uint64_t cache_bytes = 0;   // KV caches of sessions and running requests
  uint64_t pooled_cache_bytes = 0;  // caches of ended streams kept for reuse (still held)
  DeviceMemoryStats device_memory;  // the backend's GPU memory (zeros on the CPU)
};

// What metrics need, called on the scheduler thread (must be cheap and not block).
class SchedulerListener {
 public:
  virtual ~SchedulerListener() = default;
  // One Backend call: a prompt chunk (prefill) or a batched step (decode when any row decodes).
  virtual void OnForward(StepPhase phase, int rows, int tokens, double attention_seconds) {}
  virtual void OnAdmitted(double queue_seconds) {}
  virtual void OnPromptTokens(int64_t tokens) {}
  virtual void OnFirstToken(double time_to_first_token_seconds) {}
  virtual void OnInterToken(double seconds) {}  // between consecutive tokens of a request
  virtual void OnEvictedTokens(int64_t tokens) {}
  virtual void OnGenerateFinished(const GenerateResult& result) {}
  virtual void OnScoreFinished(const ScoreResult& result) {}
  virtual void OnGauges(const SchedulerGauges& gauges) {}
};

// Counters for tests and benchmarks (thread-safe snapshot).
struct SchedulerStats {
  uint64_t steps = 0;              // loop iterations that ran the model
  uint64_t batch_calls = 0;        // ForwardBatch calls
  uint64_t batch_rows = 0;         // rows over all ForwardBatch calls
  uint64_t max_batch_rows = 0;     // largest ForwardBatch
  uint64_t prefill_chunks = 0;     // multi-token Forward calls
};

class Scheduler;

// Cancels one submitted request (thread-safe, idempotent): it stops within one step.
class RequestControl {
 public:
  void Cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

 private:
  friend class Scheduler;
  explicit RequestControl(Scheduler* scheduler) : scheduler_(scheduler) {}
  Scheduler* scheduler_;
  std::atomic<bool> cancelled_{false};
};

class Scheduler {
 public:
  // `model` must outlive the scheduler; once started, only the scheduler thread touches it.
  Scheduler(Model& model, const SchedulerOptions& options, SchedulerListener* listener = nullptr);
  ~Scheduler();  // Stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void Start();

  // Thread-safe. RESOURCE_EXHAUSTED when max_queue requests are waiting, UNAVAILABLE when the
  // scheduler no longer accepts work. Once OK, the observer gets OnFinished exactly once.
  absl::StatusOr<std::shared_ptr<RequestControl>> Submit(GenerateSpec spec,
                                                         std::shared_ptr<GenerateObserver> observer);
  absl::StatusOr<std::shared_ptr<RequestControl>> Submit(ScoreSpec spec,
                                                         std::shared_ptr<ScoreObserver> observer);

  // Session commands, run between steps; `done` is called exactly once, on the scheduler
  // thread (or the caller's when the scheduler has stopped), and must not block.
  using SessionCallback = std::function<void(absl::StatusOr<SessionInfo>)>;
  // `id` names the new session ("" = a random id; ALREADY_EXISTS when taken).
  void CreateSession(std::optional<CachePolicy> policy, SamplingOverrides sampling_defaults,
                     SessionCallback done, std::string id = "");
  void GetSession(std::string id, SessionCallback done);
  void ListSessions(std::function<void(std::vector<SessionInfo>)> done);
  // Cancels the session's running request (if any) first.
  void CloseSession(std::string id, SessionCallback done);

  // Draining: Submit and CreateSession answer UNAVAILABLE from now on; queued and running
  // requests go on.
  void StopAccepting();
  // Waits until no request is queued or running (true), or until `deadline` (false).
  bool WaitIdle(SteadyClock::time_point deadline);
  // Cancels whatever is left (UNAVAILABLE, finish reason cancelled), writes every session to
  // the session store (when there is one), and joins the thread.
  void Stop();

  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  friend class RequestControl;
  struct Job;

  void Wake();
  // Queues a request (RESOURCE_EXHAUSTED / UNAVAILABLE as Submit says).
  absl::StatusOr<std::shared_ptr<RequestControl>> Enqueue(std::unique_ptr<Job> job);
  // Queues a session command for the scheduler thread; false once that thread has ended.
  bool Post(std::function<void()> command);
  void Run();
  // Moves submitted work into the scheduler's own lists; runs session commands.
  void TakeIncoming();
  void Intake(std::unique_ptr<Job> job);
  void Admit();
  absl::Status StartGenerate(Job& job);
  absl::Status StartScore(Job& job);
  void CheckCancellations();
  void Step();
  void RunChunk(Job& job, int tokens);
  void RunBatch();
  // Bookkeeping after `count` tokens of job's to_feed went through the model; `logits` holds
  // [count][vocab] (score) or the last token's [vocab] (generate).
  void AfterFed(Job& job, int count, std::span<float> logits, double attention_seconds);
  // Per-thread scratch of ChooseToken.
  struct SamplingScratch {
    std::vector<float> logits;     // the logits before sampling changes them (logprobs)
    std::vector<int32_t> history;  // the session's history, contiguous
  };
  // A chosen token and, when asked, its log-probability and the most likely tokens.
  struct Choice {
    int32_t token = 0;
    float logprob = 0.0f;
    std::vector<TokenLogprob> top;
  };
  // Job's next token from its logits with its sampler, and its log-probabilities when asked.
  // Safe on several threads at once for different jobs.
  void ChooseToken(Job& job, std::span<float> logits, SamplingScratch& scratch,
                   Choice* choice) const;
  // ChooseToken, then EmitToken.
  void SampleNext(Job& job, std::span<float> logits);
  // Records and streams a chosen token; finishes the request on a stop or its length.
  void EmitToken(Job& job, Choice choice);
  void FinishGenerate(Job& job, FinishReason reason, absl::Status status, std::string detail);
  void FinishScore(Job& job, absl::Status status);
  // Ends a request that never ran (refused at intake or admission, or cancelled while queued).
  void Reject(Job& job, absl::Status status);
  // `entry` became idle: its expiry may be the next one.
  void NoteIdle(const SessionEntry& entry);
  void ReportGauges();

  Model& model_;
  SchedulerOptions options_;
  SchedulerListener* listener_;
  SessionStore store_;
  SessionTable sessions_;
  const int vocab_size_;

  // Shared with transport threads, under mutex_.
  std::mutex mutex_;
  std::condition_variable wake_cv_;
  std::condition_variable idle_cv_;
  std::deque<std::unique_ptr<Job>> incoming_;
  std::deque<std::function<void()>> commands_;
  int waiting_count_ = 0;  // submitted requests not yet admitted (incoming + waiting_)
  std::atomic<int> running_count_{0};  // running_.size(), for Submit's queue check
  bool accepting_ = true;
  bool stopping_ = false;
  bool idle_ = true;
  bool woken_ = false;
  bool thread_done_ = false;

  // Scheduler thread only.
  std::deque<std::unique_ptr<Job>> waiting_;
  std::vector<std::unique_ptr<Job>> running_;  // in admission order
  struct Row {
    Job* job;
    int32_t token;
  };
  std::vector<Row> rows_;
  std::vector<int32_t> row_tokens_;
  std::vector<KvCache*> row_caches_;
  std::vector<int32_t> row_next_;  // the rows' argmax when a batch is all greedy decodes
  std::vector<float> batch_logits_;  // [max_batch][vocab]
  std::vector<float> chunk_logits_;  // [prefill_chunk_tokens][vocab]
  ThreadPool sampling_pool_;
  std::vector<SamplingScratch> sampling_scratch_;  // [sampling_pool_.size()]
  std::vector<size_t> sampled_rows_;               // rows of a batch that sample
  std::vector<Choice> row_chosen_;                 // their tokens
  // The earliest time an idle session may expire; nullopt: no idle session.
  std::optional<SteadyClock::time_point> next_expiry_;
  // When the session store is next swept for files past --session-store-ttl-s (nullopt: never).
  std::optional<SteadyClock::time_point> next_store_sweep_;

  std::atomic<uint64_t> stat_steps_{0}, stat_batch_calls_{0}, stat_batch_rows_{0},
      stat_max_batch_rows_{0}, stat_prefill_chunks_{0};

  std::mutex join_mutex_;  // Stop() may be called from two threads at once
  std::thread thread_;
};

}  // namespace sinkserve
