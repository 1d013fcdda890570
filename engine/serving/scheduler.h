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
#include "common/base/thread_pool.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/serving/requests.h"
#include "engine/serving/session_table.h"

namespace sinkserve {

struct SchedulerOptions {
  int max_batch = 16;  // requests running at once
  int max_queue = 64;  // requests waiting beyond the free slots; more → RESOURCE_EXHAUSTED
  int prefill_chunk_tokens = 128;  // prompt tokens fed per step in multi-token chunks, all requests
  CachePolicy default_policy;      // of new streams that name none
  SessionTable::Limits session_limits;
  size_t history_limit_tokens = 4096;  // per session, for the repetition penalty
  // Threads that sample the rows of a batched step in parallel (0 = the machine's cores, at
  // most 8): a sampled token costs ~0.3–0.6 ms of host time at a 50k vocabulary, so 64 rows
  // would take longer than a GPU decode step on one thread.
  int sampling_threads = 0;
  // Where sessions go when they leave memory (`--session-store`); nullptr = nowhere (evicted
  // sessions are lost). The caller owns it; it must outlive the scheduler.
  PersistentSessionStore* session_store = nullptr;
  bool persist_every_turn = false;                 // --session-persist turn
  std::chrono::milliseconds session_store_ttl{0};  // --session-store-ttl-s; 0 = keep files
  std::string server_id;                           // owner of this server's store leases
  SessionStoreListener* store_listener = nullptr;  // hears the store's writes and restores
};

enum class StepPhase : uint8_t { kStepPhasePrefill, kStepPhaseDecode };

struct SchedulerGauges {
  int running = 0;                  // requests admitted and not finished
  int waiting = 0;                  // requests submitted and not admitted
  int sessions = 0;                 // named sessions
  uint64_t cache_bytes = 0;         // KV caches of sessions and running requests
  uint64_t pooled_cache_bytes = 0;  // caches of ended streams kept for reuse (still held)
  DeviceMemoryStats device_memory;  // the backend's GPU memory (zeros on the CPU)
};

// What metrics need, called on the scheduler thread (must be cheap and not block).
class SchedulerListener {
 public:
  virtual ~SchedulerListener() = default;
  // One Backend call: a prompt chunk (prefill) or a batched step (decode when any row decodes).
  virtual void OnForward(StepPhase phase, int rows, int tokens, double attention_seconds) {}
  // Per request: `client_api` is its spec's client_api label.
  virtual void OnAdmitted(const std::string& client_api, double queue_seconds) {}
  virtual void OnPromptTokens(const std::string& client_api, int64_t tokens) {}
  virtual void OnFirstToken(const std::string& client_api, double time_to_first_token_seconds) {}
  // Between consecutive tokens of a request.
  virtual void OnInterToken(const std::string& client_api, double seconds) {}
  // Tokens a forward call evicted from the request's streaming cache (> 0).
  virtual void OnEvictedTokens(const std::string& client_api, int64_t tokens) {}
  virtual void OnGenerateFinished(const std::string& client_api, const GenerateResult& result) {}
  virtual void OnScoreFinished(const std::string& client_api, const ScoreResult& result) {}
  virtual void OnGauges(const SchedulerGauges& gauges) {}
};

// Counters for tests and benchmarks (thread-safe snapshot).
struct SchedulerStats {
  uint64_t steps = 0;           // loop iterations that ran the model
  uint64_t batch_calls = 0;     // ForwardBatch calls
  uint64_t batch_rows = 0;      // rows over all ForwardBatch calls
  uint64_t max_batch_rows = 0;  // largest ForwardBatch
  uint64_t prefill_chunks = 0;  // multi-token Forward calls
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
  absl::StatusOr<std::shared_ptr<RequestControl>> Submit(
      GenerateSpec spec, std::shared_ptr<GenerateObserver> observer);
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
  struct GenerateJob;
  struct ScoreJob;

  void Wake();
  // Queues a request (RESOURCE_EXHAUSTED / UNAVAILABLE as Submit says).
  absl::StatusOr<std::shared_ptr<RequestControl>> Enqueue(std::unique_ptr<Job> job);
  // Queues a session command for the scheduler thread; false once that thread has ended.
  bool Post(std::function<void()> command);
  void Run();
  // Moves submitted work into the scheduler's own lists; runs session commands.
  void TakeIncoming();
  void Intake(std::unique_ptr<Job> job);
  // A Generate that continues a session: claims it (refused when unknown or busy).
  absl::Status ClaimSession(GenerateJob& job);
  void Admit();
  absl::Status StartGenerate(GenerateJob& job);
  absl::Status StartScore(ScoreJob& job);
  void CheckCancellations();
  void Step();
  void RunChunk(Job& job, int tokens);
  void RunBatch();
  // Bookkeeping after `count` tokens of job's to_feed went through the model; `logits` holds
  // [count][vocab] (score) or the last token's [vocab] (generate).
  void AfterFed(Job& job, int count, std::span<float> logits, double attention_seconds);
  void GenerateFed(GenerateJob& job, int count, std::span<float> logits);
  void ScoreFed(ScoreJob& job, int count, std::span<float> logits);
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
  void ChooseToken(GenerateJob& job, std::span<float> logits, SamplingScratch& scratch,
                   Choice* choice) const;
  // ChooseToken, then EmitToken.
  void SampleNext(GenerateJob& job, std::span<float> logits);
  // Records and streams a chosen token; finishes the request on a stop or its length.
  void EmitToken(GenerateJob& job, Choice choice);
  void FinishGenerate(GenerateJob& job, FinishReason reason, absl::Status status,
                      std::string detail);
  void FinishScore(ScoreJob& job, absl::Status status);
  // Ends a running request that failed or was stopped (finish reason `reason`, the status's
  // message as its detail).
  void Fail(Job& job, FinishReason reason, const absl::Status& status);
  // Tells the listener (there is one) of `tokens` evicted from job's cache.
  void ReportEvicted(const Job& job, int64_t tokens);
  // Ends a request that never ran (refused at intake or admission, or cancelled while queued).
  void Reject(Job& job, absl::Status status);
  // Rejects a request of waiting_ (or one refused at intake): it no longer counts as waiting.
  void RejectWaiting(Job& job, absl::Status status);
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
  int waiting_count_ = 0;              // submitted requests not yet admitted (incoming + waiting_)
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
    GenerateJob* decoder;  // job, when the row decodes (samples its next token)
    int32_t token;
  };
  std::vector<Row> rows_;
  std::vector<int32_t> row_tokens_;
  std::vector<KvCache*> row_caches_;
  std::vector<int64_t> row_evicted_;  // the rows' tokens_evicted() before the step
  std::vector<int32_t> row_next_;     // the rows' argmax when a batch is all greedy decodes
  std::vector<float> batch_logits_;   // [max_batch][vocab]
  std::vector<float> chunk_logits_;   // [prefill_chunk_tokens][vocab]
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
