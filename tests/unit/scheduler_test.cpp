// The engine's Scheduler driven directly from many client threads at once (no gRPC): batched
// greedy and seeded requests equal their runs alone, cancellation and deadlines free every slot,
// sessions raced from several threads, Score beside Generate, a full queue, and drain / stop
// with requests in flight. Observers run on the scheduler thread; the collectors below only
// record under a mutex and notify. This suite is what build-tsan runs in CI (scripts/test.sh):
// with the demo model it exercises every hand-off between transport threads and the scheduler.
#include "engine/serving/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/model.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Generous: TSan runs the model ~10x slower, and the CI machine is shared.
constexpr auto kWait = seconds(120);
// "Until cancelled": more tokens than any test lets a request generate.
constexpr int kEndless = 1'000'000;

// Waits on `cv` for `ready` under `lock`, at most kWait.
template <typename Pred>
bool Await(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Pred ready) {
  return cv.wait_for(lock, kWait, ready);
}

// What both observers keep: the final result, how many times OnFinished came, and events that
// broke the observer contract — under one mutex, with a condition variable for the waits.
template <typename Result>
class Collector {
 public:
  // The result; a timeout fails the test and returns an INTERNAL status.
  Result WaitFinished() {
    std::unique_lock lock(mutex_);
    if (!Await(cv_, lock, [&] { return finished_ > 0; })) {
      ADD_FAILURE() << "no OnFinished within " << kWait.count() << " s";
      Result timed_out;
      timed_out.status = absl::InternalError("test timed out waiting for OnFinished");
      return timed_out;
    }
    return result_;
  }
  int finished_count() const {
    std::lock_guard lock(mutex_);
    return finished_;
  }
  int violations() const {
    std::lock_guard lock(mutex_);
    return violations_;
  }

 protected:
  void Finish(Result result) {
    std::lock_guard lock(mutex_);
    ++finished_;
    result_ = std::move(result);
    cv_.notify_all();
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int finished_ = 0;
  int violations_ = 0;  // events out of order or after OnFinished
  Result result_;
};

// One Generate's events, checked against the observer contract as they arrive.
class GenerateCollector : public GenerateObserver, public Collector<GenerateResult> {
 public:
  void OnStarted(const std::string& session_id) override {
    std::lock_guard lock(mutex_);
    if (started_ || finished_ > 0) ++violations_;
    started_ = true;
    started_session_ = session_id;
    cv_.notify_all();
  }
  void OnTokens(TokenDelta delta) override {
    std::lock_guard lock(mutex_);
    if (!started_ || finished_ > 0) ++violations_;
    tokens_.insert(tokens_.end(), delta.token_ids.begin(), delta.token_ids.end());
    for (auto& top : delta.top_logprobs) top_.push_back(std::move(top));
    text_ += delta.text;
    cv_.notify_all();
  }
  void OnFinished(GenerateResult result) override { Finish(std::move(result)); }

  bool WaitStarted() {
    std::unique_lock lock(mutex_);
    return Await(cv_, lock, [&] { return started_ || finished_ > 0; }) && started_;
  }
  // At least `count` tokens received (false on timeout or when it finished first).
  bool WaitTokens(size_t count) {
    std::unique_lock lock(mutex_);
    return Await(cv_, lock, [&] { return tokens_.size() >= count || finished_ > 0; }) &&
           tokens_.size() >= count;
  }
  bool started() const {
    std::lock_guard lock(mutex_);
    return started_;
  }
  std::vector<int32_t> tokens() const {
    std::lock_guard lock(mutex_);
    return tokens_;
  }
  std::vector<std::vector<TokenLogprob>> top_logprobs() const {
    std::lock_guard lock(mutex_);
    return top_;
  }

 private:
  bool started_ = false;
  std::string started_session_;
  std::vector<int32_t> tokens_;
  std::vector<std::vector<TokenLogprob>> top_;
  std::string text_;
};

class ScoreCollector : public ScoreObserver, public Collector<ScoreResult> {
 public:
  void OnProgress(ScoreProgress progress) override {
    std::lock_guard lock(mutex_);
    if (finished_ > 0 || progress.scored_tokens < last_scored_ ||
        progress.scored_tokens > progress.total_tokens) {
      ++violations_;
    }
    last_scored_ = progress.scored_tokens;
    ++progress_events_;
  }
  void OnFinished(ScoreResult result) override { Finish(std::move(result)); }
  int progress_events() const {
    std::lock_guard lock(mutex_);
    return progress_events_;
  }
  int64_t last_scored() const {
    std::lock_guard lock(mutex_);
    return last_scored_;
  }

 private:
  int64_t last_scored_ = 0;
  int progress_events_ = 0;
};

// The scheduler's gauges as last reported, and the most requests seen running at once.
class GaugeRecorder : public SchedulerListener {
 public:
  void OnGauges(const SchedulerGauges& gauges) override {
    std::lock_guard lock(mutex_);
    last_ = gauges;
    max_running_ = std::max(max_running_, gauges.running);
  }
  SchedulerGauges last() const {
    std::lock_guard lock(mutex_);
    return last_;
  }
  int max_running() const {
    std::lock_guard lock(mutex_);
    return max_running_;
  }

 private:
  mutable std::mutex mutex_;
  SchedulerGauges last_;
  int max_running_ = 0;
};

// A session command's reply, waited for on the calling thread.
template <typename T>
class Reply {
 public:
  std::function<void(T)> Callback() {
    return [this](T value) {
      std::lock_guard lock(mutex_);
      ++calls_;
      value_ = std::move(value);
      cv_.notify_all();
    };
  }
  T Wait() {
    std::unique_lock lock(mutex_);
    EXPECT_TRUE(Await(cv_, lock, [&] { return calls_ > 0; })) << "no session reply";
    EXPECT_EQ(calls_, 1);
    return value_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int calls_ = 0;
  T value_{};
};
using SessionReply = Reply<absl::StatusOr<SessionInfo>>;

absl::StatusOr<SessionInfo> CreateSession(Scheduler& scheduler) {
  SessionReply reply;
  scheduler.CreateSession(std::nullopt, SamplingOverrides{}, reply.Callback());
  return reply.Wait();
}
absl::StatusOr<SessionInfo> GetSession(Scheduler& scheduler, const std::string& id) {
  SessionReply reply;
  scheduler.GetSession(id, reply.Callback());
  return reply.Wait();
}
absl::StatusOr<SessionInfo> CloseSession(Scheduler& scheduler, const std::string& id) {
  SessionReply reply;
  scheduler.CloseSession(id, reply.Callback());
  return reply.Wait();
}
std::vector<SessionInfo> ListSessions(Scheduler& scheduler) {
  Reply<std::vector<SessionInfo>> reply;
  scheduler.ListSessions(reply.Callback());
  return reply.Wait();
}

GenerateSpec Greedy(std::vector<int32_t> prompt, int max_new_tokens) {
  GenerateSpec spec;
  spec.prompt = std::move(prompt);
  spec.max_new_tokens = max_new_tokens;
  spec.sampling.temperature = 0.0f;
  return spec;
}

// A submitted Generate: its events, and its control when Submit accepted it.
struct Submitted {
  std::shared_ptr<GenerateCollector> events = std::make_shared<GenerateCollector>();
  absl::Status status;  // of Submit
  std::shared_ptr<RequestControl> control;
};

Submitted Submit(Scheduler& scheduler, GenerateSpec spec) {
  Submitted submitted;
  absl::StatusOr<std::shared_ptr<RequestControl>> control =
      scheduler.Submit(std::move(spec), submitted.events);
  submitted.status = control.status();
  if (control.ok()) submitted.control = *control;
  return submitted;
}

// Runs fn(i) for i in [0, n) on n threads released together; joins them.
void RunThreads(int n, const std::function<void(int)>& fn) {
  std::latch start(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      fn(i);
    });
  }
  for (std::thread& thread : threads) thread.join();
}

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(ModelOptions{"demo", 2});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(model_, nullptr);
    seed_ = testing::TestSeed();
    rng_.seed(seed_);
    std::printf("seed %llu (SINKSERVE_TEST_SEED reproduces)\n",
                static_cast<unsigned long long>(seed_));
  }

  std::unique_ptr<Scheduler> StartScheduler(const SchedulerOptions& options) {
    auto scheduler = std::make_unique<Scheduler>(*model_, options, &gauges_);
    scheduler->Start();
    return scheduler;
  }

  // `length` random ids of the demo vocabulary.
  std::vector<int32_t> RandomPrompt(size_t length) {
    std::vector<int32_t> prompt(length);
    for (int32_t& token : prompt)
      token = static_cast<int32_t>(rng_() % model_->config().vocab_size);
    return prompt;
  }

  // Nothing queued or running, no cache held by a request, every slot free.
  void ExpectIdle(Scheduler& scheduler, int sessions = 0) {
    ASSERT_TRUE(scheduler.WaitIdle(SteadyClock::now() + kWait)) << "scheduler never went idle";
    const SchedulerGauges gauges = gauges_.last();
    EXPECT_EQ(gauges.running, 0);
    EXPECT_EQ(gauges.waiting, 0);
    EXPECT_EQ(gauges.sessions, sessions);
    if (sessions == 0) {
      EXPECT_EQ(gauges.cache_bytes, 0u);
    }
  }

  static Model* model_;
  GaugeRecorder gauges_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};
Model* SchedulerTest::model_ = nullptr;

// Every request's contract: OnFinished exactly once and last, and the tokens it reports are
// the tokens it sent.
void ExpectComplete(const Submitted& request, const GenerateResult& result) {
  EXPECT_EQ(request.events->finished_count(), 1);
  EXPECT_EQ(request.events->violations(), 0);
  EXPECT_EQ(result.generated_tokens, static_cast<int64_t>(request.events->tokens().size()));
}

TEST_F(SchedulerTest, ConcurrentRequestsEqualTheirRunAlone) {
  constexpr int kClients = 12;
  constexpr int kTokens = 24;
  SchedulerOptions options;
  options.max_batch = 8;  // 12 clients: some wait for a slot
  auto scheduler = StartScheduler(options);
  // Short prompts (≤ 10 tokens, 12 × 10 < prefill_chunk_tokens): each prompt is one chunk both
  // alone and in company, so batching is the only difference, and it changes no bit.
  std::vector<GenerateSpec> specs;
  for (int i = 0; i < kClients; ++i) {
    GenerateSpec spec = Greedy(RandomPrompt(1 + rng_() % 10), kTokens);
    spec.request_id = absl::StrCat("r", i);
    if (i % 2 == 1) {  // seeded sampling: its own random stream, equal alone and batched
      spec.sampling.temperature = 0.9f;
      spec.sampling.seed = seed_ + i;
      // The sampler's paths (top-k; top-p with the penalty and logprobs; temperature alone),
      // several of them sampled in parallel within one batched step.
      if (i % 4 == 1) spec.sampling.top_k = 40;
      if (i % 4 == 3) {
        spec.sampling.top_p = 0.9f;
        spec.sampling.repetition_penalty = 1.2f;
        spec.return_logprobs = true;
      }
      if (i == 11) spec.sampling.top_p = 1.0f;
    }
    specs.push_back(spec);
  }
  std::vector<std::vector<int32_t>> alone(kClients);
  for (int i = 0; i < kClients; ++i) {
    Submitted request = Submit(*scheduler, specs[i]);
    ASSERT_TRUE(request.status.ok()) << request.status;
    const GenerateResult result = request.events->WaitFinished();
    ASSERT_TRUE(result.status.ok()) << result.status;
    alone[i] = request.events->tokens();
    ASSERT_EQ(alone[i].size(), static_cast<size_t>(kTokens));
  }
  const SchedulerStats before = scheduler->stats();

  std::vector<Submitted> requests(kClients);
  std::vector<GenerateResult> results(kClients);
  RunThreads(kClients, [&](int i) {
    requests[i] = Submit(*scheduler, specs[i]);
    if (requests[i].status.ok()) results[i] = requests[i].events->WaitFinished();
  });
  for (int i = 0; i < kClients; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(requests[i].status.ok()) << requests[i].status;
    ASSERT_TRUE(results[i].status.ok()) << results[i].status;
    EXPECT_EQ(results[i].finish_reason, FinishReason::kFinishReasonLength);
    EXPECT_EQ(results[i].request_id, specs[i].request_id);
    EXPECT_EQ(results[i].prompt_tokens, static_cast<int64_t>(specs[i].prompt.size()));
    ExpectComplete(requests[i], results[i]);
    EXPECT_EQ(requests[i].events->tokens(), alone[i]);
  }
  // They really ran together: batched steps of several rows, up to the batch limit.
  const SchedulerStats after = scheduler->stats();
  EXPECT_GT(after.max_batch_rows, 1u);
  EXPECT_LE(after.max_batch_rows, static_cast<uint64_t>(options.max_batch));
  EXPECT_LT(after.steps - before.steps, static_cast<uint64_t>(kClients * kTokens));
  EXPECT_LE(gauges_.max_running(), options.max_batch);
  ExpectIdle(*scheduler);
}

TEST_F(SchedulerTest, CancelAndDeadlinesFromOtherThreadsFreeEverySlot) {
  SchedulerOptions options;
  options.max_batch = 2;
  auto scheduler = StartScheduler(options);
  // Two running until cancelled, four waiting behind them, one whose deadline passed already.
  std::vector<Submitted> running, waiting;
  for (int i = 0; i < 2; ++i) {
    running.push_back(Submit(*scheduler, Greedy(RandomPrompt(5), kEndless)));
    ASSERT_TRUE(running.back().status.ok()) << running.back().status;
  }
  for (Submitted& request : running) ASSERT_TRUE(request.events->WaitStarted());
  for (int i = 0; i < 4; ++i) {
    waiting.push_back(Submit(*scheduler, Greedy(RandomPrompt(5), 8)));
    ASSERT_TRUE(waiting.back().status.ok()) << waiting.back().status;
  }
  GenerateSpec expired = Greedy(RandomPrompt(3), 8);
  expired.deadline = SteadyClock::now() - milliseconds(1);
  Submitted expired_request = Submit(*scheduler, expired);
  ASSERT_TRUE(expired_request.status.ok());

  // Six threads: four cancel two waiting requests (two threads each: Cancel is idempotent) and
  // wait for their refusal; then two cancel the running ones mid-stream.
  std::latch waiting_cancelled(4);
  RunThreads(6, [&](int i) {
    if (i < 4) {
      Submitted& request = waiting[i / 2];
      request.control->Cancel();
      request.events->WaitFinished();
      waiting_cancelled.count_down();
    } else {
      Submitted& request = running[i - 4];
      EXPECT_TRUE(request.events->WaitTokens(3));
      waiting_cancelled.wait();
      request.control->Cancel();
      request.control->Cancel();
    }
  });
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    const GenerateResult before_admission = waiting[i].events->WaitFinished();
    EXPECT_EQ(before_admission.status.code(), absl::StatusCode::kCancelled);
    EXPECT_TRUE(before_admission.rejected);
    EXPECT_FALSE(waiting[i].events->started());
    ExpectComplete(waiting[i], before_admission);
    EXPECT_EQ(before_admission.generated_tokens, 0);

    const GenerateResult streaming = running[i].events->WaitFinished();
    EXPECT_EQ(streaming.status.code(), absl::StatusCode::kCancelled) << streaming.status;
    EXPECT_FALSE(streaming.rejected);
    EXPECT_EQ(streaming.finish_reason, FinishReason::kFinishReasonCancelled);
    EXPECT_GE(streaming.generated_tokens, 3);
    ExpectComplete(running[i], streaming);
  }
  const GenerateResult expired_result = expired_request.events->WaitFinished();
  EXPECT_EQ(expired_result.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(expired_result.rejected);
  ExpectComplete(expired_request, expired_result);
  // The two left waiting ran to the end in the freed slots.
  for (int i = 2; i < 4; ++i) {
    const GenerateResult result = waiting[i].events->WaitFinished();
    EXPECT_TRUE(result.status.ok()) << result.status;
    EXPECT_EQ(result.generated_tokens, 8);
    ExpectComplete(waiting[i], result);
  }

  // A deadline that passes while streaming ends the request with its tokens so far.
  GenerateSpec timed = Greedy(RandomPrompt(4), kEndless);
  timed.deadline = SteadyClock::now() + milliseconds(300);
  Submitted timed_request = Submit(*scheduler, timed);
  ASSERT_TRUE(timed_request.status.ok());
  const GenerateResult timed_result = timed_request.events->WaitFinished();
  EXPECT_EQ(timed_result.status.code(), absl::StatusCode::kDeadlineExceeded) << timed_result.status;
  EXPECT_GE(timed_result.timings.e2e_seconds, 0.3);
  ExpectComplete(timed_request, timed_result);

  // Afterwards nothing is held, and a full batch is admitted at once.
  ExpectIdle(*scheduler);
  std::vector<Submitted> batch;
  for (int i = 0; i < options.max_batch; ++i)
    batch.push_back(Submit(*scheduler, Greedy(RandomPrompt(2), kEndless)));
  for (Submitted& request : batch) {
    ASSERT_TRUE(request.status.ok());
    EXPECT_TRUE(request.events->WaitTokens(1));
    request.control->Cancel();
    EXPECT_EQ(request.events->WaitFinished().status.code(), absl::StatusCode::kCancelled);
  }
  ExpectIdle(*scheduler);
}

TEST_F(SchedulerTest, SessionsRacedFromManyThreads) {
  constexpr int kClients = 6;
  constexpr int kTurns = 3;
  constexpr int kTokens = 6;
  SchedulerOptions options;
  options.max_batch = 8;  // the 6 probes below run until closed: 2 slots stay for the turns
  auto scheduler = StartScheduler(options);
  std::vector<std::vector<std::vector<int32_t>>> prompts(kClients);  // [client][turn]
  for (auto& turns : prompts) {
    for (int turn = 0; turn < kTurns; ++turn) turns.push_back(RandomPrompt(1 + rng_() % 6));
  }
  // One client's conversation: a session, its turns in order, their tokens.
  auto converse = [&](int client) {
    std::vector<std::vector<int32_t>> replies;
    const absl::StatusOr<SessionInfo> created = CreateSession(*scheduler);
    EXPECT_TRUE(created.ok()) << created.status();
    if (!created.ok()) return replies;
    int64_t fed = 0;
    for (int turn = 0; turn < kTurns; ++turn) {
      GenerateSpec spec = Greedy(prompts[client][turn], kTokens);
      spec.session_id = created->id;
      Submitted request = Submit(*scheduler, spec);
      EXPECT_TRUE(request.status.ok()) << request.status;
      if (!request.status.ok()) return replies;
      const GenerateResult result = request.events->WaitFinished();
      EXPECT_TRUE(result.status.ok()) << result.status;
      EXPECT_EQ(result.session_id, created->id);
      ExpectComplete(request, result);
      replies.push_back(request.events->tokens());
      fed += static_cast<int64_t>(prompts[client][turn].size()) + kTokens;
    }
    // Every token went through the model but the last reply's last token (fed next turn).
    const absl::StatusOr<SessionInfo> info = GetSession(*scheduler, created->id);
    EXPECT_TRUE(info.ok()) << info.status();
    if (info.ok()) {
      EXPECT_EQ(info->requests, static_cast<uint64_t>(kTurns));
      EXPECT_FALSE(info->busy);
      EXPECT_EQ(info->tokens_seen, fed - 1);
    }
    const absl::StatusOr<SessionInfo> closed = CloseSession(*scheduler, created->id);
    EXPECT_TRUE(closed.ok()) << closed.status();
    EXPECT_EQ(GetSession(*scheduler, created->id).status().code(), absl::StatusCode::kNotFound);
    return replies;
  };
  std::vector<std::vector<std::vector<int32_t>>> alone(kClients);
  for (int client = 0; client < kClients; ++client) alone[client] = converse(client);
  ASSERT_FALSE(HasFailure());

  // Each client converses while probing a second session of its own: a second request on a
  // busy session is ABORTED, a cache policy on a continued session INVALID_ARGUMENT, and
  // closing it mid-stream cancels its request. Two more threads list and look up sessions
  // throughout.
  std::vector<std::vector<int32_t>> probe_prompts;  // rng_ is not for threads: drawn here
  for (int i = 0; i < kClients; ++i) probe_prompts.push_back(RandomPrompt(3));
  std::vector<std::vector<std::vector<int32_t>>> together(kClients);
  std::atomic<int> clients_left{kClients};
  std::mutex ids_mutex;
  std::vector<std::string> ids;
  RunThreads(kClients + 2, [&](int i) {
    if (i >= kClients) {
      std::mt19937_64 rng(seed_ + i);
      while (clients_left.load() > 0) {
        const std::vector<SessionInfo> list = ListSessions(*scheduler);
        EXPECT_LE(list.size(), static_cast<size_t>(2 * kClients));
        std::string id = "s_unknown";
        {
          std::lock_guard lock(ids_mutex);
          if (!ids.empty()) id = ids[rng() % ids.size()];
        }
        const absl::StatusOr<SessionInfo> info = GetSession(*scheduler, id);
        EXPECT_TRUE(info.ok() || info.status().code() == absl::StatusCode::kNotFound)
            << info.status();
        std::this_thread::sleep_for(milliseconds(1));
      }
      return;
    }
    // However this client ends (a failed ASSERT returns), the look-up threads stop.
    struct Done {
      std::atomic<int>& left;
      ~Done() { left.fetch_sub(1); }
    } done{clients_left};
    const absl::StatusOr<SessionInfo> probe = CreateSession(*scheduler);
    ASSERT_TRUE(probe.ok()) << probe.status();
    {
      std::lock_guard lock(ids_mutex);
      ids.push_back(probe->id);
    }
    GenerateSpec endless = Greedy(probe_prompts[i], kEndless);
    endless.session_id = probe->id;
    Submitted streaming = Submit(*scheduler, endless);
    ASSERT_TRUE(streaming.status.ok());
    GenerateSpec second = Greedy(probe_prompts[i], 4);
    second.session_id = probe->id;
    Submitted busy = Submit(*scheduler, second);
    ASSERT_TRUE(busy.status.ok());
    GenerateSpec with_policy = second;
    with_policy.policy = CachePolicy{};
    Submitted policy_on_session = Submit(*scheduler, with_policy);
    ASSERT_TRUE(policy_on_session.status.ok());

    together[i] = converse(i);

    const GenerateResult busy_result = busy.events->WaitFinished();
    EXPECT_EQ(busy_result.status.code(), absl::StatusCode::kAborted) << busy_result.status;
    EXPECT_TRUE(busy_result.rejected);
    ExpectComplete(busy, busy_result);
    // Refused as busy or as a bad argument: both are refusals before any work.
    const GenerateResult policy_result = policy_on_session.events->WaitFinished();
    EXPECT_TRUE(policy_result.rejected);
    EXPECT_TRUE(policy_result.status.code() == absl::StatusCode::kAborted ||
                policy_result.status.code() == absl::StatusCode::kInvalidArgument)
        << policy_result.status;
    EXPECT_TRUE(streaming.events->WaitTokens(2));
    const absl::StatusOr<SessionInfo> info = GetSession(*scheduler, probe->id);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_TRUE(info->busy);
    const absl::StatusOr<SessionInfo> closed = CloseSession(*scheduler, probe->id);
    ASSERT_TRUE(closed.ok()) << closed.status();
    const GenerateResult streaming_result = streaming.events->WaitFinished();
    EXPECT_EQ(streaming_result.status.code(), absl::StatusCode::kCancelled)
        << streaming_result.status;
    EXPECT_EQ(streaming_result.finish_reason, FinishReason::kFinishReasonCancelled);
    ExpectComplete(streaming, streaming_result);
    // Closed: NOT_FOUND for a look-up, a close, and a request.
    EXPECT_EQ(GetSession(*scheduler, probe->id).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(CloseSession(*scheduler, probe->id).status().code(), absl::StatusCode::kNotFound);
    Submitted after = Submit(*scheduler, second);
    ASSERT_TRUE(after.status.ok());
    const GenerateResult after_result = after.events->WaitFinished();
    EXPECT_EQ(after_result.status.code(), absl::StatusCode::kNotFound) << after_result.status;
    EXPECT_TRUE(after_result.rejected);
  });
  for (int client = 0; client < kClients; ++client) {
    EXPECT_EQ(together[client], alone[client]) << "client " << client;
  }
  // Never created: NOT_FOUND.
  GenerateSpec unknown = Greedy(RandomPrompt(2), 4);
  unknown.session_id = "s_0123456789abcdef0123456789abcdef";
  Submitted unknown_request = Submit(*scheduler, unknown);
  ASSERT_TRUE(unknown_request.status.ok());
  EXPECT_EQ(unknown_request.events->WaitFinished().status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetSession(*scheduler, unknown.session_id).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(ListSessions(*scheduler).empty());
  ExpectIdle(*scheduler);
}

TEST_F(SchedulerTest, IdleSessionsExpire) {
  SchedulerOptions options;
  options.session_limits.ttl = milliseconds(200);
  auto scheduler = StartScheduler(options);
  const absl::StatusOr<SessionInfo> session = CreateSession(*scheduler);
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ(ListSessions(*scheduler).size(), 1u);
  // The scheduler wakes for the expiry by itself: nothing else is submitted meanwhile.
  std::this_thread::sleep_for(milliseconds(600));
  const absl::StatusOr<SessionInfo> expired = GetSession(*scheduler, session->id);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(expired.status().message().find("expired"), std::string::npos) << expired.status();
  EXPECT_TRUE(ListSessions(*scheduler).empty());
}

TEST_F(SchedulerTest, ScoreRunsAlongsideGenerate) {
  constexpr int kScores = 3;
  constexpr int kGenerates = 3;
  constexpr int kTokens = 16;
  auto scheduler = StartScheduler(SchedulerOptions{});
  ScoreSpec score_spec;
  score_spec.tokens = RandomPrompt(150);
  score_spec.progress_interval_tokens = 32;
  // One-token prompts: always a row of the batched step, whatever the prefill budget left.
  std::vector<GenerateSpec> generate_specs;
  for (int i = 0; i < kGenerates; ++i) generate_specs.push_back(Greedy(RandomPrompt(1), kTokens));

  auto score = [&](ScoreSpec spec) {
    auto events = std::make_shared<ScoreCollector>();
    absl::StatusOr<std::shared_ptr<RequestControl>> control = scheduler->Submit(spec, events);
    EXPECT_TRUE(control.ok()) << control.status();
    ScoreResult result = control.ok() ? events->WaitFinished() : ScoreResult{};
    EXPECT_EQ(events->finished_count(), 1);
    EXPECT_EQ(events->violations(), 0);
    // Progress after a chunk of ≥ 32 tokens (the first is 128), and at the end: all 149.
    EXPECT_GE(events->progress_events(), 2);
    EXPECT_EQ(events->last_scored(), 149);
    return result;
  };
  const ScoreResult alone = score(score_spec);
  ASSERT_TRUE(alone.status.ok()) << alone.status;
  EXPECT_EQ(alone.scored_tokens, 149);
  EXPECT_TRUE(std::isfinite(alone.nll_mean));
  std::vector<std::vector<int32_t>> generated_alone;
  for (const GenerateSpec& spec : generate_specs) {
    Submitted request = Submit(*scheduler, spec);
    ASSERT_TRUE(request.status.ok());
    ASSERT_TRUE(request.events->WaitFinished().status.ok());
    generated_alone.push_back(request.events->tokens());
  }

  std::vector<ScoreResult> scores(kScores);
  std::vector<Submitted> generates(kGenerates);
  std::vector<GenerateResult> generate_results(kGenerates);
  RunThreads(kScores + kGenerates, [&](int i) {
    if (i < kScores) {
      scores[i] = score(score_spec);
    } else {
      generates[i - kScores] = Submit(*scheduler, generate_specs[i - kScores]);
      if (generates[i - kScores].status.ok()) {
        generate_results[i - kScores] = generates[i - kScores].events->WaitFinished();
      }
    }
  });
  for (const ScoreResult& result : scores) {
    ASSERT_TRUE(result.status.ok()) << result.status;
    EXPECT_EQ(result.scored_tokens, 149);
    // Prefill chunks may split differently in company: equal up to float rounding.
    EXPECT_NEAR(result.nll_mean, alone.nll_mean, 1e-4 * std::max(1.0, alone.nll_mean));
  }
  for (int i = 0; i < kGenerates; ++i) {
    ASSERT_TRUE(generates[i].status.ok());
    ASSERT_TRUE(generate_results[i].status.ok()) << generate_results[i].status;
    ExpectComplete(generates[i], generate_results[i]);
    EXPECT_EQ(generates[i].events->tokens(), generated_alone[i]) << i;
  }
  ExpectIdle(*scheduler);
}

TEST_F(SchedulerTest, FullQueueIsResourceExhausted) {
  constexpr int kClients = 8;
  SchedulerOptions options;
  options.max_batch = 1;
  options.max_queue = 2;
  auto scheduler = StartScheduler(options);
  Submitted runner = Submit(*scheduler, Greedy(RandomPrompt(3), kEndless));
  ASSERT_TRUE(runner.status.ok());
  ASSERT_TRUE(runner.events->WaitTokens(1));  // it holds the only slot
  const GenerateSpec spec = Greedy(RandomPrompt(3), 4);
  std::vector<Submitted> requests(kClients);
  RunThreads(kClients, [&](int i) { requests[i] = Submit(*scheduler, spec); });
  int accepted = 0;
  for (const Submitted& request : requests) {
    if (request.status.ok()) {
      ++accepted;
    } else {
      EXPECT_EQ(request.status.code(), absl::StatusCode::kResourceExhausted) << request.status;
    }
  }
  EXPECT_EQ(accepted, options.max_queue);
  runner.control->Cancel();
  EXPECT_EQ(runner.events->WaitFinished().status.code(), absl::StatusCode::kCancelled);
  for (const Submitted& request : requests) {
    if (!request.status.ok()) continue;
    const GenerateResult result = request.events->WaitFinished();
    EXPECT_TRUE(result.status.ok()) << result.status;
    ExpectComplete(request, result);
  }
  ExpectIdle(*scheduler);
  // A refused Submit never calls its observer.
  for (const Submitted& request : requests) {
    if (!request.status.ok()) {
      EXPECT_EQ(request.events->finished_count(), 0);
    }
  }
}

TEST_F(SchedulerTest, DrainThenStopEndEveryRequestExactlyOnce) {
  constexpr int kClients = 8;
  constexpr int kPerClient = 4;
  SchedulerOptions options;
  options.max_batch = 3;
  auto scheduler = StartScheduler(options);
  // Clients submit (half until cancelled, half short), cancel some of their own, and run session
  // commands, while the main thread stops accepting, drains briefly, and stops.
  std::vector<std::vector<Submitted>> requests(kClients);
  std::atomic<int> started_clients{0};
  std::vector<std::thread> clients;
  for (int client = 0; client < kClients; ++client) {
    clients.emplace_back([&, client] {
      for (int i = 0; i < kPerClient; ++i) {
        Submitted request = Submit(*scheduler, Greedy({static_cast<int32_t>(client + 1), 7},
                                                      (client + i) % 2 == 0 ? kEndless : 4));
        if (i == 1 && request.status.ok() && client % 3 == 0) request.control->Cancel();
        requests[client].push_back(std::move(request));
        SessionReply reply;
        scheduler->CreateSession(std::nullopt, SamplingOverrides{}, reply.Callback());
        const absl::StatusOr<SessionInfo> session = reply.Wait();
        EXPECT_TRUE(session.ok() || session.status().code() == absl::StatusCode::kUnavailable)
            << session.status();
        if (i == 0) started_clients.fetch_add(1);
        std::this_thread::sleep_for(milliseconds(5));
      }
    });
  }
  while (started_clients.load() < kClients) std::this_thread::sleep_for(milliseconds(1));
  scheduler->StopAccepting();
  Submitted refused = Submit(*scheduler, Greedy({1, 2}, 4));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kUnavailable) << refused.status;
  // Requests until cancelled keep it busy: the drain times out.
  EXPECT_FALSE(scheduler->WaitIdle(SteadyClock::now() + milliseconds(200)));
  // Two threads stop it at once.
  std::thread second_stopper([&] { scheduler->Stop(); });
  scheduler->Stop();
  second_stopper.join();
  for (std::thread& client : clients) client.join();

  int accepted = 0, unavailable = 0;
  for (int client = 0; client < kClients; ++client) {
    for (const Submitted& request : requests[client]) {
      if (!request.status.ok()) {
        EXPECT_EQ(request.status.code(), absl::StatusCode::kUnavailable) << request.status;
        EXPECT_EQ(request.events->finished_count(), 0);
        continue;
      }
      ++accepted;
      const GenerateResult result = request.events->WaitFinished();
      ExpectComplete(request, result);
      const absl::StatusCode code = result.status.code();
      EXPECT_TRUE(code == absl::StatusCode::kOk || code == absl::StatusCode::kCancelled ||
                  code == absl::StatusCode::kUnavailable)
          << result.status;
      if (code == absl::StatusCode::kUnavailable) {
        ++unavailable;
        EXPECT_EQ(result.finish_reason, result.rejected ? FinishReason::kFinishReasonError
                                                        : FinishReason::kFinishReasonCancelled);
      }
      if (code == absl::StatusCode::kOk) {
        EXPECT_EQ(result.generated_tokens, 4);
      }
    }
  }
  EXPECT_GE(accepted, kClients);  // every client's first request came before StopAccepting
  EXPECT_GE(unavailable, 1);      // the endless ones not cancelled ended at Stop
  // Stopped: UNAVAILABLE at once, session commands answered on the caller's thread.
  EXPECT_EQ(Submit(*scheduler, Greedy({1, 2}, 4)).status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CreateSession(*scheduler).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(ListSessions(*scheduler).empty());
  EXPECT_TRUE(scheduler->WaitIdle(SteadyClock::now()));
  EXPECT_EQ(gauges_.last().running, 0);
  EXPECT_EQ(gauges_.last().waiting, 0);
}

// top_logprobs (the OpenAI API's `logprobs: N`): each step's N most likely tokens equal a
// log-softmax, in double, over the full logits of the same context run through the backend
// token by token; under greedy the chosen token is the first of them.
TEST_F(SchedulerTest, TopLogprobsEqualALogSoftmaxOverTheFullLogits) {
  const SchedulerOptions options;
  std::unique_ptr<Scheduler> scheduler = StartScheduler(options);
  constexpr int kTop = 20, kSteps = 8;
  GenerateSpec spec;
  spec.prompt = RandomPrompt(1 + rng_() % 30);
  spec.max_new_tokens = kSteps;
  spec.sampling.temperature = 0.0f;
  spec.return_logprobs = true;
  spec.top_logprobs = kTop;
  Submitted request = Submit(*scheduler, spec);
  ASSERT_TRUE(request.status.ok()) << request.status;
  ASSERT_TRUE(request.events->WaitFinished().status.ok());
  const std::vector<int32_t> tokens = request.events->tokens();
  const std::vector<std::vector<TokenLogprob>> top = request.events->top_logprobs();
  ASSERT_EQ(tokens.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(top.size(), tokens.size());

  Backend& backend = model_->backend();
  const int vocab = model_->config().vocab_size;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = backend.NewCache(options.default_policy);
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<float> logits(vocab);
  ASSERT_TRUE(FeedTokens(backend, spec.prompt, **cache, logits).ok());
  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step));
    double max_logit = logits[0];
    for (float logit : logits) max_logit = std::max<double>(max_logit, logit);
    double sum = 0;
    for (float logit : logits) sum += std::exp(static_cast<double>(logit) - max_logit);
    const double log_z = max_logit + std::log(sum);
    std::vector<int32_t> order(vocab);
    for (int32_t id = 0; id < vocab; ++id) order[id] = id;
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    ASSERT_EQ(top[step].size(), static_cast<size_t>(kTop));
    for (int k = 0; k < kTop; ++k) {
      EXPECT_EQ(top[step][k].token, order[k]) << "rank " << k;
      EXPECT_NEAR(top[step][k].logprob, logits[order[k]] - log_z, 1e-5) << "rank " << k;
    }
    EXPECT_EQ(tokens[step], top[step][0].token) << "greedy chose another token than the first";
    const int32_t next = tokens[step];
    ASSERT_TRUE(FeedTokens(backend, std::span<const int32_t>(&next, 1), **cache, logits).ok());
  }
  ExpectIdle(*scheduler);
}

}  // namespace
}  // namespace sinkserve
