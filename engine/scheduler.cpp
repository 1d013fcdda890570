#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/incremental_detokenizer.h"
#include "engine/perplexity.h"
#include "engine/stop_matcher.h"

namespace sinkserve {
namespace {

double Seconds(SteadyClock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

const absl::Status& ShuttingDown() {
  static const absl::Status* status =
      new absl::Status(absl::UnavailableError("the server is shutting down"));
  return *status;
}

RequestTimings MakeTimings(SteadyClock::time_point arrival, SteadyClock::time_point admitted,
                           SteadyClock::time_point first_token,
                           SteadyClock::time_point last_token, int64_t generated,
                           double attention_seconds, SteadyClock::time_point now) {
  RequestTimings timings;
  timings.queue_seconds = admitted >= arrival ? Seconds(admitted - arrival) : 0.0;
  timings.time_to_first_token_seconds = generated > 0 ? Seconds(first_token - arrival) : 0.0;
  timings.time_per_output_token_seconds =
      generated > 1 ? Seconds(last_token - first_token) / static_cast<double>(generated - 1) : 0.0;
  timings.attention_seconds = attention_seconds;
  timings.e2e_seconds = Seconds(now - arrival);
  return timings;
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kFinishReasonStop: return "stop";
    case FinishReason::kFinishReasonLength: return "length";
    case FinishReason::kFinishReasonCancelled: return "cancelled";
    case FinishReason::kFinishReasonError: return "error";
  }
  return "unknown";
}

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

void RequestControl::Cancel() {
  if (!cancelled_.exchange(true, std::memory_order_acq_rel)) scheduler_->Wake();
}

Scheduler::Scheduler(Model& model, const SchedulerOptions& options, SchedulerListener* listener)
    : model_(model),
      options_(options),
      listener_(listener),
      store_(model.backend()),
      sessions_(store_,
                KvShape{model.config().num_layers, model.config().num_heads,
                        model.config().head_dim},
                options.session_limits),
      vocab_size_(model.config().vocab_size) {
  options_.max_batch = std::max(1, options_.max_batch);
  options_.prefill_chunk_tokens = std::max(1, options_.prefill_chunk_tokens);
  batch_logits_.resize(static_cast<size_t>(options_.max_batch) * vocab_size_);
  chunk_logits_.resize(static_cast<size_t>(options_.prefill_chunk_tokens) * vocab_size_);
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() { thread_ = std::thread([this] { Run(); }); }

void Scheduler::Wake() {
  std::lock_guard lock(mutex_);
  woken_ = true;
  wake_cv_.notify_one();
}

// ---------------------------------------------------------------------------------------------
// Transport-thread API

absl::StatusOr<std::shared_ptr<RequestControl>> Scheduler::Submit(
    GenerateSpec spec, std::shared_ptr<GenerateObserver> observer) {
  auto job = std::make_unique<Job>();
  job->generate = std::move(spec);
  job->generate_observer = std::move(observer);
  job->control.reset(new RequestControl(this));
  std::shared_ptr<RequestControl> control = job->control;
  std::lock_guard lock(mutex_);
  if (!accepting_) return absl::UnavailableError("the server is draining: not accepting requests");
  if (waiting_count_ >= options_.max_queue) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue: ", waiting_count_, " requests are already waiting (the server's --max-queue); "
        "retry later"));
  }
  ++waiting_count_;
  idle_ = false;
  incoming_.push_back(std::move(job));
  wake_cv_.notify_one();
  return control;
}

absl::StatusOr<std::shared_ptr<RequestControl>> Scheduler::Submit(
    ScoreSpec spec, std::shared_ptr<ScoreObserver> observer) {
  auto job = std::make_unique<Job>();
  job->is_score = true;
  job->score = std::move(spec);
  job->score_observer = std::move(observer);
  job->control.reset(new RequestControl(this));
  std::shared_ptr<RequestControl> control = job->control;
  std::lock_guard lock(mutex_);
  if (!accepting_) return absl::UnavailableError("the server is draining: not accepting requests");
  if (waiting_count_ >= options_.max_queue) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue: ", waiting_count_, " requests are already waiting (the server's --max-queue); "
        "retry later"));
  }
  ++waiting_count_;
  idle_ = false;
  incoming_.push_back(std::move(job));
  wake_cv_.notify_one();
  return control;
}

bool Scheduler::Post(std::function<void()> command) {
  std::lock_guard lock(mutex_);
  if (thread_done_) return false;
  commands_.push_back(std::move(command));
  wake_cv_.notify_one();
  return true;
}

void Scheduler::CreateSession(std::optional<CachePolicy> policy,
                              SamplingOverrides sampling_defaults, SessionCallback done) {
  auto command = [this, policy, sampling_defaults, done] {
    CachePolicy resolved = policy.value_or(options_.default_policy);
    if (resolved.kind == CachePolicy::Kind::kCachePolicyDense &&
        resolved.dense_capacity_tokens == 0) {
      resolved.dense_capacity_tokens = model_.config().max_position_embeddings;
    }
    SessionOptions session_options{resolved, sampling_defaults.Resolve(),
                                   options_.history_limit_tokens};
    absl::StatusOr<SessionEntry*> entry = sessions_.Create(session_options, sampling_defaults);
    if (!entry.ok()) return done(entry.status());
    const SteadyClock::time_point now = SteadyClock::now();
    if (!next_expiry_) next_expiry_ = now + options_.session_limits.ttl;
    done(sessions_.Info(**entry, now));
  };
  if (!Post(command)) done(ShuttingDown());
}

void Scheduler::GetSession(std::string id, SessionCallback done) {
  auto command = [this, id, done] {
    absl::StatusOr<SessionEntry*> entry = sessions_.Find(id);
    if (!entry.ok()) return done(entry.status());
    done(sessions_.Info(**entry, SteadyClock::now()));
  };
  if (!Post(command)) done(ShuttingDown());
}

void Scheduler::ListSessions(std::function<void(std::vector<SessionInfo>)> done) {
  auto command = [this, done] {
    const SteadyClock::time_point now = SteadyClock::now();
    std::vector<SessionInfo> list;
    for (const SessionEntry* entry : sessions_.MostRecentFirst()) {
      list.push_back(sessions_.Info(*entry, now));
    }
    done(std::move(list));
  };
  if (!Post(command)) done({});
}

void Scheduler::CloseSession(std::string id, SessionCallback done) {
  auto command = [this, id, done] {
    absl::StatusOr<SessionEntry*> entry = sessions_.Find(id);
    if (!entry.ok()) return done(entry.status());
    if ((*entry)->busy) {
      const absl::Status closed =
          absl::CancelledError(absl::StrCat("session ", id, " was closed (CloseSession)"));
      for (auto& job : running_) {
        if (job->entry == *entry && !job->finished) {
          FinishGenerate(*job, FinishReason::kFinishReasonCancelled, closed, "session closed");
        }
      }
      std::erase_if(running_, [](const auto& job) { return job->finished; });
      for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if ((*it)->entry == *entry) {
          {
            std::lock_guard lock(mutex_);
            --waiting_count_;
          }
          Reject(**it, closed);
          waiting_.erase(it);
          break;
        }
      }
    }
    SessionInfo info = sessions_.Info(**entry, SteadyClock::now());
    sessions_.Close(*entry);
    done(std::move(info));
  };
  if (!Post(command)) done(ShuttingDown());
}

void Scheduler::StopAccepting() {
  std::lock_guard lock(mutex_);
  accepting_ = false;
}

bool Scheduler::WaitIdle(SteadyClock::time_point deadline) {
  std::unique_lock lock(mutex_);
  return idle_cv_.wait_until(lock, deadline, [&] { return idle_ || thread_done_; });
}

void Scheduler::Stop() {
  {
    std::lock_guard lock(mutex_);
    accepting_ = false;
    stopping_ = true;
    wake_cv_.notify_one();
  }
  std::lock_guard join(join_mutex_);
  if (thread_.joinable()) thread_.join();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats stats;
  stats.steps = stat_steps_.load();
  stats.batch_calls = stat_batch_calls_.load();
  stats.batch_rows = stat_batch_rows_.load();
  stats.max_batch_rows = stat_max_batch_rows_.load();
  stats.prefill_chunks = stat_prefill_chunks_.load();
  return stats;
}

// ---------------------------------------------------------------------------------------------
// The scheduler thread

void Scheduler::Run() {
  while (true) {
    TakeIncoming();
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    const SteadyClock::time_point now = SteadyClock::now();
    if (!next_expiry_ || now >= *next_expiry_) next_expiry_ = sessions_.ExpireIdle(now);
    CheckCancellations();
    Admit();
    ReportGauges();
    if (!running_.empty()) {
      Step();
      continue;
    }
    std::unique_lock lock(mutex_);
    idle_ = waiting_count_ == 0;
    if (idle_) idle_cv_.notify_all();
    auto ready = [&] { return woken_ || stopping_ || !incoming_.empty() || !commands_.empty(); };
    if (next_expiry_) {
      wake_cv_.wait_until(lock, *next_expiry_, ready);
    } else {
      wake_cv_.wait(lock, ready);
    }
    woken_ = false;
  }
  // Stopping: everything still here is cancelled; commands are still answered.
  while (true) {
    std::deque<std::unique_ptr<Job>> jobs;
    std::deque<std::function<void()>> commands;
    {
      std::lock_guard lock(mutex_);
      if (incoming_.empty() && commands_.empty()) {
        waiting_count_ = 0;
        thread_done_ = true;
        idle_ = true;
        break;
      }
      jobs.swap(incoming_);
      commands.swap(commands_);
    }
    for (auto& job : jobs) Reject(*job, ShuttingDown());
    for (auto& command : commands) command();
  }
  for (auto& job : waiting_) Reject(*job, ShuttingDown());
  waiting_.clear();
  for (auto& job : running_) {
    if (job->is_score) {
      FinishScore(*job, ShuttingDown());
    } else {
      FinishGenerate(*job, FinishReason::kFinishReasonCancelled, ShuttingDown(),
                     "the server shut down before the request finished");
    }
  }
  running_.clear();
  ReportGauges();
  idle_cv_.notify_all();
}

void Scheduler::TakeIncoming() {
  std::deque<std::unique_ptr<Job>> jobs;
  std::deque<std::function<void()>> commands;
  {
    std::lock_guard lock(mutex_);
    jobs.swap(incoming_);
    commands.swap(commands_);
  }
  for (auto& job : jobs) Intake(std::move(job));
  for (auto& command : commands) command();
}

void Scheduler::Intake(std::unique_ptr<Job> job) {
  // Session checks happen at once, so a request for an unknown or busy session fails fast.
  if (!job->is_score && !job->generate.session_id.empty()) {
    absl::Status refused;
    absl::StatusOr<SessionEntry*> entry = sessions_.Find(job->generate.session_id);
    if (!entry.ok()) {
      refused = entry.status();
    } else if ((*entry)->busy) {
      refused = absl::AbortedError(absl::StrCat(
          "session_id: session ", job->generate.session_id,
          " is busy with another request (one request per session at a time); retry when it "
          "finishes"));
    } else if (job->generate.policy) {
      refused = absl::InvalidArgumentError(
          "cache_policy: must be unset when continuing a session (its cache already exists)");
    }
    if (!refused.ok()) {
      {
        std::lock_guard lock(mutex_);
        --waiting_count_;
      }
      Reject(*job, refused);
      return;
    }
    (*entry)->busy = true;
    job->entry = *entry;
  }
  waiting_.push_back(std::move(job));
}

void Scheduler::CheckCancellations() {
  const SteadyClock::time_point now = SteadyClock::now();
  auto why = [&](const Job& job) -> absl::Status {
    if (job.control->cancelled()) return absl::CancelledError("cancelled by the client");
    if (job.deadline() && now >= *job.deadline()) {
      return absl::DeadlineExceededError("the request's deadline passed");
    }
    return absl::OkStatus();
  };
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (absl::Status status = why(**it); !status.ok()) {
      {
        std::lock_guard lock(mutex_);
        --waiting_count_;
      }
      Reject(**it, status);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& job : running_) {
    absl::Status status = why(*job);
    if (status.ok()) continue;
    if (job->is_score) {
      FinishScore(*job, status);
    } else {
      FinishGenerate(*job, FinishReason::kFinishReasonCancelled, status,
                     std::string(status.message()));
    }
  }
  std::erase_if(running_, [](const auto& job) { return job->finished; });
}

void Scheduler::Admit() {
  while (static_cast<int>(running_.size()) < options_.max_batch && !waiting_.empty()) {
    std::unique_ptr<Job> job = std::move(waiting_.front());
    waiting_.pop_front();
    {
      std::lock_guard lock(mutex_);
      --waiting_count_;
    }
    job->admitted = SteadyClock::now();
    absl::Status status = job->is_score ? StartScore(*job) : StartGenerate(*job);
    if (!status.ok()) {
      Reject(*job, status);
      continue;
    }
    if (listener_) listener_->OnAdmitted(Seconds(job->admitted - job->arrival()));
    if (!job->is_score) job->generate_observer->OnStarted(job->entry ? job->entry->id : "");
    running_.push_back(std::move(job));
  }
}

absl::Status Scheduler::StartGenerate(Job& job) {
  const ModelConfig& config = model_.config();
  const Tokenizer* tokenizer = model_.tokenizer();
  const std::optional<int32_t> eos =
      tokenizer != nullptr ? tokenizer->eos_token_id() : std::nullopt;
  GenerateSpec& spec = job.generate;

  if (job.entry != nullptr) {
    SessionEntry& entry = *job.entry;
    KvCache& cache = entry.session->cache();
    std::vector<int32_t> to_feed = entry.unfed_tokens;
    to_feed.insert(to_feed.end(), spec.prompt.begin(), spec.prompt.end());
    if (to_feed.empty()) {
      if (cache.tokens_seen() != 0 || !eos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "prompt_text: empty, and session ", entry.id,
            " has no generated token to continue from; give a prompt"));
      }
      to_feed.push_back(*eos);
    }
    if (entry.session->options().policy.kind == CachePolicy::Kind::kCachePolicyDense &&
        static_cast<int64_t>(to_feed.size()) > cache.capacity_tokens() - cache.tokens_cached()) {
      return absl::OutOfRangeError(absl::StrCat(
          "prompt_text: ", to_feed.size(), " tokens do not fit session ", entry.id,
          "'s dense cache (", cache.tokens_cached(), " of ", cache.capacity_tokens(),
          " tokens used); start a new session, or use a streaming cache"));
    }
    const SamplingParams params = spec.sampling.Over(entry.sampling_defaults).Resolve();
    if (spec.sampling.seed) {
      // A seed in the request restarts the random stream for this request only.
      job.own_sampler.emplace(params);
      job.sampler = &*job.own_sampler;
    } else {
      entry.session->sampler().set_params(params);
      job.sampler = &entry.session->sampler();
    }
    job.carried = entry.unfed_tokens.size();
    entry.unfed_tokens.clear();
    job.to_feed = std::move(to_feed);
    job.session = entry.session;
  } else {
    CachePolicy policy = spec.policy.value_or(options_.default_policy);
    job.to_feed = spec.prompt;
    if (job.to_feed.empty()) {
      if (!eos) {
        return absl::InvalidArgumentError(
            "prompt_text: empty, and the model's tokenizer has no end-of-text token to start "
            "from; give a prompt");
      }
      job.to_feed.push_back(*eos);
    }
    if (policy.kind == CachePolicy::Kind::kCachePolicyDense) {
      const int64_t context = config.max_position_embeddings;
      if (policy.dense_capacity_tokens == 0) {
        // A one-shot stream's dense cache only as large as the request can use.
        policy.dense_capacity_tokens = static_cast<int>(
            spec.keep_session ? context
                              : std::min<int64_t>(context, static_cast<int64_t>(job.to_feed.size()) +
                                                               spec.max_new_tokens));
      }
      if (static_cast<int64_t>(job.to_feed.size()) > policy.dense_capacity_tokens) {
        return absl::OutOfRangeError(absl::StrCat(
            "prompt_text: ", job.to_feed.size(), " tokens do not fit a dense cache of ",
            policy.dense_capacity_tokens, " tokens (the model's context is ", context,
            "); use a streaming cache"));
      }
    }
    const SessionOptions session_options{policy, spec.sampling.Resolve(),
                                         options_.history_limit_tokens};
    if (spec.keep_session) {
      absl::StatusOr<SessionEntry*> entry = sessions_.Create(session_options, SamplingOverrides{});
      if (!entry.ok()) return entry.status();
      (*entry)->busy = true;
      job.entry = *entry;
      job.session = (*entry)->session;
    } else {
      if (absl::Status status = sessions_.ReserveCacheBytes(CacheBytes(
              KvShape{config.num_layers, config.num_heads, config.head_dim}, policy));
          !status.ok()) {
        return status;
      }
      absl::StatusOr<Session*> session = store_.Create(session_options);
      if (!session.ok()) return session.status();
      job.session = *session;
    }
    job.sampler = &job.session->sampler();
  }
  job.evicted_at_start = job.session->cache().tokens_evicted();
  if (tokenizer != nullptr) job.detokenizer.emplace(*tokenizer);
  job.stop_matcher.emplace(spec.stop_strings);
  return absl::OkStatus();
}

absl::Status Scheduler::StartScore(Job& job) {
  const ModelConfig& config = model_.config();
  const ScoreSpec& spec = job.score;
  CachePolicy policy = spec.policy.value_or(options_.default_policy);
  if (spec.tokens.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("text: scoring needs at least 2 tokens, got ", spec.tokens.size()));
  }
  const int64_t fed = static_cast<int64_t>(spec.tokens.size()) - 1;
  if (policy.kind == CachePolicy::Kind::kCachePolicyDense) {
    if (policy.dense_capacity_tokens == 0) {
      policy.dense_capacity_tokens =
          static_cast<int>(std::min<int64_t>(fed, config.max_position_embeddings));
    }
    if (fed > policy.dense_capacity_tokens) {
      return absl::OutOfRangeError(absl::StrCat(
          "text: ", spec.tokens.size(), " tokens need a dense cache of ", fed,
          " tokens; this one holds ", policy.dense_capacity_tokens, " (the model's context is ",
          config.max_position_embeddings, "); score fewer tokens or use a streaming cache"));
    }
  }
  if (absl::Status status = sessions_.ReserveCacheBytes(
          CacheBytes(KvShape{config.num_layers, config.num_heads, config.head_dim}, policy));
      !status.ok()) {
    return status;
  }
  absl::StatusOr<Session*> session =
      store_.Create(SessionOptions{policy, SamplingParams{}, /*history_limit_tokens=*/0});
  if (!session.ok()) return session.status();
  job.session = *session;
  job.to_feed.assign(spec.tokens.begin(), spec.tokens.end() - 1);
  return absl::OkStatus();
}

void Scheduler::Step() {
  stat_steps_.fetch_add(1, std::memory_order_relaxed);
  rows_.clear();
  int budget = options_.prefill_chunk_tokens;
  for (auto& owned : running_) {
    Job& job = *owned;
    if (job.finished) continue;
    KvCache& cache = job.session->cache();
    const int max_step = cache.MaxStepTokens();
    if (job.decoding) {
      if (max_step < 1) {
        FinishGenerate(job, FinishReason::kFinishReasonLength, absl::OkStatus(),
                       absl::StrCat("dense cache full (", cache.capacity_tokens(), " tokens)"));
      } else {
        rows_.push_back({&job, job.next_token});
      }
      continue;
    }
    if (max_step < 1) {  // admission checked the room; a bug if reached
      const absl::Status full = absl::OutOfRangeError("the dense cache is full");
      if (job.is_score) {
        FinishScore(job, full);
      } else {
        FinishGenerate(job, FinishReason::kFinishReasonError, full, std::string(full.message()));
      }
      continue;
    }
    int tokens = static_cast<int>(std::min<size_t>(job.to_feed.size() - job.fed, max_step));
    if (tokens > 1) tokens = std::min(tokens, std::max(budget, 1));
    if (tokens == 1) {
      // One exact token: a row of the batched step like any decode.
      rows_.push_back({&job, job.to_feed[job.fed]});
    } else {
      budget -= tokens;
      RunChunk(job, tokens);
    }
  }
  if (!rows_.empty()) RunBatch();
  std::erase_if(running_, [](const auto& job) { return job->finished; });
}

void Scheduler::RunChunk(Job& job, int tokens) {
  Backend& backend = model_.backend();
  KvCache& cache = job.session->cache();
  const std::span<const int32_t> chunk(job.to_feed.data() + job.fed, tokens);
  // Score needs every token's logits; Generate only the last one's.
  const std::span<float> logits(chunk_logits_.data(),
                                static_cast<size_t>(job.is_score ? tokens : 1) * vocab_size_);
  const int64_t evicted_before = cache.tokens_evicted();
  const absl::Status status = backend.Forward(chunk, cache, logits, job.is_score);
  const double attention = backend.last_step_attention_seconds();
  stat_prefill_chunks_.fetch_add(1, std::memory_order_relaxed);
  if (listener_) {
    listener_->OnForward(StepPhase::kStepPhasePrefill, 1, tokens, attention);
    listener_->OnEvictedTokens(cache.tokens_evicted() - evicted_before);
  }
  if (!status.ok()) {
    if (job.is_score) {
      FinishScore(job, status);
    } else {
      FinishGenerate(job, FinishReason::kFinishReasonError, status,
                     std::string(status.message()));
    }
    return;
  }
  AfterFed(job, tokens, logits, attention);
}

void Scheduler::RunBatch() {
  Backend& backend = model_.backend();
  const size_t rows = rows_.size();
  row_tokens_.clear();
  row_caches_.clear();
  int64_t evicted_before = 0;
  bool any_decode = false;
  for (const Row& row : rows_) {
    row_tokens_.push_back(row.token);
    row_caches_.push_back(&row.job->session->cache());
    evicted_before += row.job->session->cache().tokens_evicted();
    any_decode |= row.job->decoding;
  }
  const std::span<float> logits(batch_logits_.data(), rows * vocab_size_);
  const absl::Status status = backend.ForwardBatch(row_tokens_, row_caches_, logits);
  const double attention = backend.last_step_attention_seconds();
  stat_batch_calls_.fetch_add(1, std::memory_order_relaxed);
  stat_batch_rows_.fetch_add(rows, std::memory_order_relaxed);
  if (rows > stat_max_batch_rows_.load(std::memory_order_relaxed)) {
    stat_max_batch_rows_.store(rows, std::memory_order_relaxed);
  }
  if (listener_) {
    int64_t evicted_after = 0;
    for (KvCache* cache : row_caches_) evicted_after += cache->tokens_evicted();
    listener_->OnForward(any_decode ? StepPhase::kStepPhaseDecode : StepPhase::kStepPhasePrefill,
                         static_cast<int>(rows), static_cast<int>(rows), attention);
    listener_->OnEvictedTokens(evicted_after - evicted_before);
  }
  const double share = attention / static_cast<double>(rows);
  for (size_t i = 0; i < rows; ++i) {
    Job& job = *rows_[i].job;
    if (!status.ok()) {
      if (job.is_score) {
        FinishScore(job, status);
      } else {
        FinishGenerate(job, FinishReason::kFinishReasonError, status,
                       std::string(status.message()));
      }
      continue;
    }
    const std::span<float> row_logits = logits.subspan(i * vocab_size_, vocab_size_);
    if (job.decoding) {
      job.attention_seconds += share;
      job.session->Record(job.next_token);
      SampleNext(job, row_logits);
    } else {
      AfterFed(job, 1, row_logits, share);
    }
  }
}

void Scheduler::AfterFed(Job& job, int count, std::span<float> logits, double attention_seconds) {
  job.attention_seconds += attention_seconds;
  if (listener_) listener_->OnPromptTokens(count);
  if (job.is_score) {
    for (int i = 0; i < count; ++i) {
      const int32_t target = job.score.tokens[job.fed + i + 1];
      const double nll = TokenNll(logits.subspan(static_cast<size_t>(i) * vocab_size_, vocab_size_),
                                  target);
      job.nll_sum += nll;
      ++job.scored;
      if (job.score.return_token_nll) job.pending_nll.push_back(nll);
    }
    job.fed += count;
    if (job.fed == job.to_feed.size()) {
      FinishScore(job, absl::OkStatus());
    } else if (job.scored - job.reported >= job.score.progress_interval_tokens) {
      job.reported = job.scored;
      job.score_observer->OnProgress(
          ScoreProgress{job.scored, static_cast<int64_t>(job.score.tokens.size()),
                        std::move(job.pending_nll)});
      job.pending_nll.clear();
    }
    return;
  }
  for (int i = 0; i < count; ++i) job.session->Record(job.to_feed[job.fed + i]);
  job.fed += count;
  if (job.fed < job.to_feed.size()) return;
  if (job.generate.max_new_tokens == 0) {
    FinishGenerate(job, FinishReason::kFinishReasonLength, absl::OkStatus(),
                   "max_new_tokens is 0: the prompt was fed, nothing generated");
    return;
  }
  SampleNext(job, logits.subspan(0, vocab_size_));
}

void Scheduler::SampleNext(Job& job, std::span<float> logits) {
  const GenerateSpec& spec = job.generate;
  if (spec.return_logprobs) logprob_scratch_.assign(logits.begin(), logits.end());
  std::span<const int32_t> history;
  if (job.sampler->params().repetition_penalty != 1.0f) {
    history_scratch_.assign(job.session->history().begin(), job.session->history().end());
    history = history_scratch_;
  }
  const int32_t token = job.sampler->Sample(logits, history);

  const SteadyClock::time_point now = SteadyClock::now();
  ++job.generated;
  if (listener_) {
    if (job.generated == 1) {
      listener_->OnFirstToken(Seconds(now - job.arrival()));
    } else {
      listener_->OnInterToken(Seconds(now - job.last_token));
    }
  }
  if (job.generated == 1) job.first_token = now;
  job.last_token = now;
  job.next_token = token;
  job.decoding = true;

  TokenDelta delta;
  delta.token_ids.push_back(token);
  if (spec.return_logprobs) {
    delta.logprobs.push_back(static_cast<float>(-TokenNll(logprob_scratch_, token)));
  }
  // The end of the text: flush held-back bytes, which may still complete a stop string.
  auto flush = [&](std::string* text) {
    StopStringMatcher::Result tail =
        job.stop_matcher->Push(job.detokenizer ? job.detokenizer->Finish() : std::string());
    *text += tail.text;
    if (!tail.stopped) *text += job.stop_matcher->Flush();
    return tail;
  };
  std::optional<FinishReason> finish;
  std::string detail;
  if (std::find(spec.stop_token_ids.begin(), spec.stop_token_ids.end(), token) !=
      spec.stop_token_ids.end()) {
    finish = FinishReason::kFinishReasonStop;
    detail = absl::StrCat("stop token id ", token);
    flush(&delta.text);
  } else {
    StopStringMatcher::Result piece =
        job.stop_matcher->Push(job.detokenizer ? job.detokenizer->Push(token) : std::string());
    delta.text = std::move(piece.text);
    if (!piece.stopped && job.generated >= spec.max_new_tokens) {
      finish = FinishReason::kFinishReasonLength;
      detail = absl::StrCat("max_new_tokens (", spec.max_new_tokens, ") reached");
      piece = flush(&delta.text);
    }
    if (piece.stopped) {
      finish = FinishReason::kFinishReasonStop;
      detail = absl::StrCat("stop string \"", piece.matched, "\"");
    }
  }
  job.generate_observer->OnTokens(std::move(delta));
  if (finish) FinishGenerate(job, *finish, absl::OkStatus(), std::move(detail));
}

void Scheduler::FinishGenerate(Job& job, FinishReason reason, absl::Status status,
                               std::string detail) {
  if (job.finished) return;
  job.finished = true;
  const SteadyClock::time_point now = SteadyClock::now();
  GenerateResult result;
  result.status = std::move(status);
  result.finish_reason = reason;
  result.finish_detail = std::move(detail);
  result.request_id = job.generate.request_id;
  result.prompt_tokens = static_cast<int64_t>(job.fed);
  result.generated_tokens = job.generated;
  result.evicted_tokens = job.session->cache().tokens_evicted() - job.evicted_at_start;
  result.timings = MakeTimings(job.arrival(), job.admitted, job.first_token, job.last_token,
                               job.generated, job.attention_seconds, now);
  if (job.entry != nullptr) {
    SessionEntry& entry = *job.entry;
    // What the stream has not run through the model yet: the last sampled token, or the
    // carried-over tokens a cancelled prefill did not reach.
    if (job.generated > 0) {
      entry.unfed_tokens = {job.next_token};
    } else if (job.fed < job.carried) {
      entry.unfed_tokens.assign(job.to_feed.begin() + job.fed, job.to_feed.begin() + job.carried);
    } else {
      entry.unfed_tokens.clear();
    }
    entry.busy = false;
    entry.last_used = now;
    entry.last_used_unix_ms = UnixMillisNow();
    ++entry.requests;
    if (!next_expiry_) next_expiry_ = now + options_.session_limits.ttl;
    result.session_id = entry.id;
    result.session = sessions_.Info(entry, now);
  } else {
    (void)store_.Destroy(job.session->id());
  }
  job.session = nullptr;
  if (listener_) listener_->OnGenerateFinished(result);
  job.generate_observer->OnFinished(std::move(result));
}

void Scheduler::FinishScore(Job& job, absl::Status status) {
  if (job.finished) return;
  job.finished = true;
  const SteadyClock::time_point now = SteadyClock::now();
  const int64_t total = static_cast<int64_t>(job.score.tokens.size());
  if (status.ok()) {
    job.score_observer->OnProgress(ScoreProgress{job.scored, total, std::move(job.pending_nll)});
  }
  ScoreResult result;
  result.status = std::move(status);
  result.request_id = job.score.request_id;
  result.tokens = total;
  result.scored_tokens = job.scored;
  result.nll_mean = job.scored > 0 ? job.nll_sum / static_cast<double>(job.scored) : 0.0;
  result.perplexity = std::exp(result.nll_mean);
  result.evicted_tokens = job.session->cache().tokens_evicted();
  result.cache_description = job.session->cache().Describe();
  result.timings = MakeTimings(job.arrival(), job.admitted, now, now, 0, job.attention_seconds, now);
  (void)store_.Destroy(job.session->id());
  job.session = nullptr;
  if (listener_) listener_->OnScoreFinished(result);
  job.score_observer->OnFinished(std::move(result));
}

void Scheduler::Reject(Job& job, absl::Status status) {
  if (job.entry != nullptr) job.entry->busy = false;
  job.finished = true;
  const double e2e = Seconds(SteadyClock::now() - job.arrival());
  if (job.is_score) {
    ScoreResult result;
    result.status = std::move(status);
    result.rejected = true;
    result.request_id = job.score.request_id;
    result.timings.e2e_seconds = e2e;
    job.score_observer->OnFinished(std::move(result));
  } else {
    GenerateResult result;
    result.status = std::move(status);
    result.rejected = true;
    result.finish_reason = FinishReason::kFinishReasonError;
    result.request_id = job.generate.request_id;
    result.session_id = job.generate.session_id;
    result.timings.e2e_seconds = e2e;
    job.generate_observer->OnFinished(std::move(result));
  }
}

void Scheduler::ReportGauges() {
  if (!listener_) return;
  SchedulerGauges gauges;
  gauges.running = static_cast<int>(running_.size());
  {
    std::lock_guard lock(mutex_);
    gauges.waiting = waiting_count_;
  }
  gauges.sessions = static_cast<int>(sessions_.size());
  gauges.cache_bytes = store_.cache_bytes();
  listener_->OnGauges(gauges);
}

}  // namespace sinkserve
