#include "engine/serving/scheduler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/serving/error_subject.h"
#include "engine/serving/scheduler_job.h"

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

// UNAVAILABLE for new work once StopAccepting was called ("requests", "sessions").
absl::Status Draining(const char* what) {
  return absl::UnavailableError(absl::StrCat("the server is draining: not accepting new ", what));
}

}  // namespace

void RequestControl::Cancel() {
  if (!cancelled_.exchange(true, std::memory_order_acq_rel)) scheduler_->Wake();
}

Scheduler::Scheduler(Model& model, const SchedulerOptions& options, SchedulerListener* listener)
    : model_(model),
      options_(options),
      listener_(listener),
      store_(model.backend()),
      sessions_(
          store_,
          KvShape{model.config().num_layers, model.config().num_heads, model.config().head_dim},
          options.session_limits,
          SessionPersistence{options.session_store, options.persist_every_turn, model.fingerprint(),
                             model.config().vocab_size, options.server_id,
                             std::chrono::milliseconds(30'000), options.session_store_ttl},
          options.store_listener),
      vocab_size_(model.config().vocab_size),
      sampling_pool_(options.sampling_threads > 0
                         ? options.sampling_threads
                         : std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 8)),
      sampling_scratch_(sampling_pool_.size()) {
  options_.max_batch = std::max(1, options_.max_batch);
  options_.prefill_chunk_tokens = std::max(1, options_.prefill_chunk_tokens);
  batch_logits_.resize(static_cast<size_t>(options_.max_batch) * vocab_size_);
  chunk_logits_.resize(static_cast<size_t>(options_.prefill_chunk_tokens) * vocab_size_);
  if (options_.session_store != nullptr && options_.session_store_ttl.count() > 0) {
    next_store_sweep_ = SteadyClock::now();
  }
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Scheduler::Wake() {
  std::lock_guard lock(mutex_);
  woken_ = true;
  wake_cv_.notify_one();
}

// ---------------------------------------------------------------------------------------------
// Transport-thread API

absl::StatusOr<std::shared_ptr<RequestControl>> Scheduler::Submit(
    GenerateSpec spec, std::shared_ptr<GenerateObserver> observer) {
  return Enqueue(std::make_unique<GenerateJob>(std::move(spec), std::move(observer)));
}

absl::StatusOr<std::shared_ptr<RequestControl>> Scheduler::Submit(
    ScoreSpec spec, std::shared_ptr<ScoreObserver> observer) {
  return Enqueue(std::make_unique<ScoreJob>(std::move(spec), std::move(observer)));
}

absl::StatusOr<std::shared_ptr<RequestControl>> Scheduler::Enqueue(std::unique_ptr<Job> job) {
  job->control.reset(new RequestControl(this));
  std::shared_ptr<RequestControl> control = job->control;
  std::lock_guard lock(mutex_);
  if (!accepting_) return Draining("requests");
  // Requests the free batch slots will take at the next step do not count as waiting.
  const int free_slots = std::max(0, options_.max_batch - running_count_.load());
  if (waiting_count_ - free_slots >= options_.max_queue) {
    return SubjectError(absl::StatusCode::kResourceExhausted, ErrorSubject::kErrorSubjectQueueLimit,
                        absl::StrCat("queue: ", waiting_count_,
                                     " requests are already waiting (max_queue); retry later"));
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
                              SamplingOverrides sampling_defaults, SessionCallback done,
                              std::string id) {
  {
    std::lock_guard lock(mutex_);
    if (!accepting_) return done(Draining("sessions"));
  }
  auto command = [this, policy, sampling_defaults, done, id] {
    CachePolicy resolved = policy.value_or(options_.default_policy);
    if (resolved.kind == CachePolicy::Kind::kCachePolicyDense &&
        resolved.dense_capacity_tokens == 0) {
      resolved.dense_capacity_tokens = model_.config().max_position_embeddings;
    }
    SessionOptions session_options{resolved, sampling_defaults.Resolve(),
                                   options_.history_limit_tokens};
    absl::StatusOr<SessionEntry*> entry = sessions_.Create(session_options, sampling_defaults, id);
    if (!entry.ok()) return done(entry.status());
    if (sessions_.persists_every_turn()) {
      (void)sessions_.Persist(**entry, StoreWrite::kStoreWriteTurn);
    }
    NoteIdle(**entry);
    done(sessions_.Info(**entry, SteadyClock::now()));
  };
  if (!Post(command)) done(ShuttingDown());
}

void Scheduler::GetSession(std::string id, SessionCallback done) {
  auto command = [this, id, done] { done(sessions_.Locate(id, SteadyClock::now())); };
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
    // A session in the store (or a damaged file of one) is closed there, not restored first.
    absl::StatusOr<SessionInfo> located = sessions_.Locate(id, SteadyClock::now());
    if (!located.ok() && !absl::IsDataLoss(located.status())) return done(located.status());
    if (!located.ok() || located->location == SessionLocation::kSessionLocationStore) {
      return done(sessions_.CloseStored(id));
    }
    absl::StatusOr<SessionEntry*> entry = sessions_.Find(id);
    if (!entry.ok()) return done(entry.status());
    if ((*entry)->busy) {
      const absl::Status closed =
          absl::CancelledError(absl::StrCat("session ", id, " was closed (CloseSession)"));
      for (auto& job : running_) {
        if (job->entry == *entry) {
          job->Finish(*this, FinishReason::kFinishReasonCancelled, closed, "session closed");
        }
      }
      std::erase_if(running_, [](const auto& job) { return job->finished; });
      for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if ((*it)->entry == *entry) {
          RejectWaiting(**it, closed);
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
    if (next_expiry_ && now >= *next_expiry_) next_expiry_ = sessions_.ExpireIdle(now);
    if (next_store_sweep_ && now >= *next_store_sweep_) {
      sessions_.SweepStore();
      // A quarter of the TTL, at most a minute: files outlive it by at most that.
      next_store_sweep_ = now + std::min<SteadyClock::duration>(options_.session_store_ttl / 4,
                                                                std::chrono::seconds(60));
    }
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
    std::optional<SteadyClock::time_point> wake = next_expiry_;
    if (next_store_sweep_ && (!wake || *next_store_sweep_ < *wake)) wake = next_store_sweep_;
    if (wake) {
      wake_cv_.wait_until(lock, *wake, ready);
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
    job->Finish(*this, FinishReason::kFinishReasonCancelled, ShuttingDown(),
                "the server shut down before the request finished");
  }
  running_.clear();
  // Drain: every session (all idle now) goes to the store, to continue on any replica.
  sessions_.PersistAll(StoreWrite::kStoreWriteDrain);
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
  if (absl::Status refused = job->Claim(*this); !refused.ok()) {
    RejectWaiting(*job, std::move(refused));
    return;
  }
  waiting_.push_back(std::move(job));
}

absl::Status Scheduler::ClaimSession(GenerateJob& job) {
  const std::string& id = job.spec.session_id;
  if (id.empty()) return absl::OkStatus();
  absl::StatusOr<SessionEntry*> entry = sessions_.Find(id);
  if (!entry.ok()) return entry.status();
  if ((*entry)->busy) {
    return absl::AbortedError(absl::StrCat(
        "session_id: session ", id,
        " is busy with another request (one request per session at a time); retry when it "
        "finishes"));
  }
  if (job.spec.policy) {
    return absl::InvalidArgumentError(
        "cache_policy: must be unset when continuing a session (its cache already exists)");
  }
  (*entry)->busy = true;
  job.entry = *entry;
  return absl::OkStatus();
}

void Scheduler::CheckCancellations() {
  const SteadyClock::time_point now = SteadyClock::now();
  auto why = [&](const Job& job) -> absl::Status {
    if (job.control->cancelled()) return absl::CancelledError("cancelled by the client");
    if (job.deadline && now >= *job.deadline) {
      return absl::DeadlineExceededError("the request's deadline passed");
    }
    return absl::OkStatus();
  };
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (absl::Status status = why(**it); !status.ok()) {
      RejectWaiting(**it, status);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& job : running_) {
    if (absl::Status status = why(*job); !status.ok()) {
      Fail(*job, FinishReason::kFinishReasonCancelled, status);
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
    if (absl::Status status = job->Start(*this); !status.ok()) {
      Reject(*job, status);
      continue;
    }
    if (listener_) listener_->OnAdmitted(job->client_api, Seconds(job->admitted - job->arrival));
    job->Started();
    running_.push_back(std::move(job));
  }
}

absl::Status Scheduler::StartGenerate(GenerateJob& job) {
  const ModelConfig& config = model_.config();
  const Tokenizer* tokenizer = model_.tokenizer();
  // The end-of-text token a new stream starts from; -1 when the tokenizer has none.
  const int32_t eos = tokenizer != nullptr ? tokenizer->eos_token_id().value_or(-1) : -1;
  const GenerateSpec& spec = job.spec;

  if (job.entry != nullptr) {
    SessionEntry& entry = *job.entry;
    KvCache& cache = entry.session->cache();
    std::vector<int32_t> to_feed = entry.unfed_tokens;
    to_feed.insert(to_feed.end(), spec.prompt.begin(), spec.prompt.end());
    if (to_feed.empty()) {
      if (cache.tokens_seen() != 0 || eos < 0) {
        return SubjectError(absl::StatusCode::kInvalidArgument, ErrorSubject::kErrorSubjectPrompt,
                            absl::StrCat("prompt: empty, and session ", entry.id,
                                         " has no generated token to continue from; give a "
                                         "prompt"));
      }
      to_feed.push_back(eos);
    }
    if (entry.session->options().policy.kind == CachePolicy::Kind::kCachePolicyDense &&
        static_cast<int64_t>(to_feed.size()) > cache.capacity_tokens() - cache.tokens_cached()) {
      return SubjectError(
          absl::StatusCode::kOutOfRange, ErrorSubject::kErrorSubjectPrompt,
          absl::StrCat("prompt: ", to_feed.size(), " tokens do not fit session ", entry.id,
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
      if (eos < 0) {
        return SubjectError(absl::StatusCode::kInvalidArgument, ErrorSubject::kErrorSubjectPrompt,
                            "prompt: empty, and the model's tokenizer has no end-of-text token "
                            "to start from; give a prompt");
      }
      job.to_feed.push_back(eos);
    }
    if (policy.kind == CachePolicy::Kind::kCachePolicyDense) {
      const int64_t context = config.max_position_embeddings;
      if (policy.dense_capacity_tokens == 0) {
        // A one-shot stream's dense cache only as large as the request can use.
        policy.dense_capacity_tokens = static_cast<int>(
            spec.keep_session
                ? context
                : std::min<int64_t>(
                      context, static_cast<int64_t>(job.to_feed.size()) + spec.max_new_tokens));
      }
      if (static_cast<int64_t>(job.to_feed.size()) > policy.dense_capacity_tokens) {
        return SubjectError(
            absl::StatusCode::kOutOfRange, ErrorSubject::kErrorSubjectPrompt,
            absl::StrCat("prompt: ", job.to_feed.size(), " tokens do not fit a dense cache of ",
                         policy.dense_capacity_tokens, " tokens (the model's context is ", context,
                         "); use a streaming cache"));
      }
    }
    const SessionOptions session_options{policy, spec.sampling.Resolve(),
                                         options_.history_limit_tokens};
    if (spec.keep_session) {
      absl::StatusOr<SessionEntry*> entry =
          sessions_.Create(session_options, SamplingOverrides{}, spec.new_session_id);
      if (!entry.ok()) return entry.status();
      (*entry)->busy = true;
      job.entry = *entry;
      job.session = (*entry)->session;
    } else {
      if (absl::Status status = sessions_.ReserveCacheBytes(
              CacheBytes(KvShape{config.num_layers, config.num_heads, config.head_dim}, policy));
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

absl::Status Scheduler::StartScore(ScoreJob& job) {
  const ModelConfig& config = model_.config();
  const ScoreSpec& spec = job.spec;
  CachePolicy policy = spec.policy.value_or(options_.default_policy);
  if (spec.tokens.size() < 2) {
    return SubjectError(
        absl::StatusCode::kInvalidArgument, ErrorSubject::kErrorSubjectScoreTokens,
        absl::StrCat("tokens: scoring needs at least 2 tokens, got ", spec.tokens.size()));
  }
  const int64_t fed = static_cast<int64_t>(spec.tokens.size()) - 1;
  if (policy.kind == CachePolicy::Kind::kCachePolicyDense) {
    if (policy.dense_capacity_tokens == 0) {
      policy.dense_capacity_tokens =
          static_cast<int>(std::min<int64_t>(fed, config.max_position_embeddings));
    }
    if (fed > policy.dense_capacity_tokens) {
      return SubjectError(
          absl::StatusCode::kOutOfRange, ErrorSubject::kErrorSubjectScoreTokens,
          absl::StrCat("tokens: ", spec.tokens.size(), " tokens need a dense cache of ", fed,
                       " tokens; this one holds ", policy.dense_capacity_tokens,
                       " (the model's context is ", config.max_position_embeddings,
                       "); score fewer tokens or use a streaming cache"));
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

void Scheduler::Reject(Job& job, absl::Status status) {
  if (job.entry != nullptr) {
    job.entry->busy = false;
    NoteIdle(*job.entry);
  }
  job.finished = true;
  job.Refused(std::move(status), Seconds(SteadyClock::now() - job.arrival));
}

void Scheduler::RejectWaiting(Job& job, absl::Status status) {
  {
    std::lock_guard lock(mutex_);
    --waiting_count_;
  }
  Reject(job, std::move(status));
}

void Scheduler::GenerateJob::Refused(absl::Status status, double e2e_seconds) {
  GenerateResult result;
  result.status = std::move(status);
  result.rejected = true;
  result.finish_reason = FinishReason::kFinishReasonError;
  result.request_id = spec.request_id;
  result.session_id = spec.session_id;
  result.timings.e2e_seconds = e2e_seconds;
  observer->OnFinished(std::move(result));
}

void Scheduler::ScoreJob::Refused(absl::Status status, double e2e_seconds) {
  ScoreResult result;
  result.status = std::move(status);
  result.rejected = true;
  result.request_id = spec.request_id;
  result.timings.e2e_seconds = e2e_seconds;
  observer->OnFinished(std::move(result));
}

void Scheduler::NoteIdle(const SessionEntry& entry) {
  const SteadyClock::time_point expiry = entry.last_used + options_.session_limits.ttl;
  if (!next_expiry_ || expiry < *next_expiry_) next_expiry_ = expiry;
}

void Scheduler::ReportGauges() {
  running_count_.store(static_cast<int>(running_.size()));
  if (!listener_) return;
  SchedulerGauges gauges;
  gauges.running = static_cast<int>(running_.size());
  {
    std::lock_guard lock(mutex_);
    gauges.waiting = waiting_count_;
  }
  gauges.sessions = static_cast<int>(sessions_.size());
  gauges.cache_bytes = store_.cache_bytes();
  gauges.pooled_cache_bytes = store_.free_cache_bytes();
  gauges.device_memory = model_.backend().device_memory();
  listener_->OnGauges(gauges);
}

}  // namespace sinkserve
