// Continuous batching, cancellation, the request queue, deadlines, busy sessions, session
// expiry and eviction — each against a real server with the limits the test needs.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <future>
#include <thread>

#include "tests/server/server_test_util.h"

namespace sinkserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration duration) { return std::chrono::duration<double>(duration).count(); }

// Reads a Generate stream on its own thread; `first` fires at the first response.
class BackgroundStream {
 public:
  BackgroundStream(v1::Sinkserve::Stub& stub, v1::GenerateRequest request) {
    thread_ = std::thread([this, &stub, request] {
      std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
          stub.Generate(&context_, request);
      v1::GenerateResponse response;
      while (reader->Read(&response)) {
        tokens_ += response.token_ids_size();
        if (response.has_result()) result_ = response.result();
        if (!first_.exchange(true)) first_promise_.set_value();
      }
      status_ = reader->Finish();
      if (!first_.exchange(true)) first_promise_.set_value();
    });
  }
  ~BackgroundStream() {
    context_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }
  bool WaitFirst(std::chrono::seconds timeout = std::chrono::seconds(20)) {
    return first_promise_.get_future().wait_for(timeout) == std::future_status::ready;
  }
  void Cancel() { context_.TryCancel(); }
  grpc::Status Join() {
    thread_.join();
    return status_;
  }
  int tokens() const { return tokens_; }
  const v1::GenerateResult& result() const { return result_; }

 private:
  grpc::ClientContext context_;
  std::thread thread_;
  std::atomic<bool> first_{false};
  std::promise<void> first_promise_;
  std::atomic<int> tokens_{0};
  v1::GenerateResult result_;
  grpc::Status status_;
};

v1::GenerateRequest LongRequest(const std::string& prompt) { return GreedyRequest(prompt, 4000); }

std::string Metrics(TestServer& server) {
  return HttpGet(server.server().metrics_port(), "/metrics");
}

TEST(SchedulingTest, ConcurrentStreamsAreBatchedAndUnchanged) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.max_batch = 16;
  TestServer server(options);
  std::unique_ptr<Model> model = LoadDemoModel();
  constexpr int kStreams = 16, kTokens = 64;
  std::vector<std::string> prompts;
  for (int i = 0; i < kStreams; ++i) {
    prompts.push_back(std::string(1 + i % 5, "AbCdEfGhIjKlMnOp"[i]) + " streams " +
                      std::to_string(i * 7919 % 1000));
  }
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& prompt : prompts) {
    std::unique_ptr<KvCache> cache = *model->backend().NewCache(CachePolicy{});
    expected.push_back(OfflineGreedy(*model, *cache, *model->tokenizer()->Encode(prompt), kTokens));
  }

  // One stream alone, then sixteen at once: each the same tokens as its sequential run, and the
  // batched steps show it.
  const auto single_start = Clock::now();
  const GenerateOutput single = Generate(server.stub(), GreedyRequest(prompts[0], kTokens));
  const double single_seconds = Seconds(Clock::now() - single_start);
  ASSERT_TRUE(single.status.ok());
  EXPECT_EQ(single.token_ids, expected[0]);

  std::vector<GenerateOutput> outputs(kStreams);
  std::vector<std::unique_ptr<v1::Sinkserve::Stub>> stubs;
  for (int i = 0; i < kStreams; ++i) stubs.push_back(server.NewStub());
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back(
        [&, i] { outputs[i] = Generate(*stubs[i], GreedyRequest(prompts[i], kTokens)); });
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds = Seconds(Clock::now() - start);
  double ttft_sum = 0;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(outputs[i].status.ok()) << outputs[i].status.error_message();
    EXPECT_EQ(outputs[i].token_ids, expected[i]) << "stream " << i;
    ttft_sum += outputs[i].result.time_to_first_token_ms();
  }
  const SchedulerStats stats = server.server().scheduler()->stats();
  EXPECT_GE(stats.max_batch_rows, 2u);
  const std::string metrics = Metrics(server);
  const double steps = MetricValue(metrics, "sinkserve_batch_rows_count{model_name=\"demo\"}");
  const double single_row_steps =
      MetricValue(metrics, "sinkserve_batch_rows_bucket{model_name=\"demo\",le=\"1\"}");
  EXPECT_GT(steps, single_row_steps) << "no batched step with more than one row";
  std::printf(
      "[ measured ] demo model, 1 thread: 1 stream %.0f tok/s; %d streams %.0f tok/s "
      "aggregate (mean TTFT %.1f ms); largest batch %llu rows, %.2f rows per step\n",
      kTokens / single_seconds, kStreams, kStreams * kTokens / seconds, ttft_sum / kStreams,
      static_cast<unsigned long long>(stats.max_batch_rows),
      static_cast<double>(stats.batch_rows) / static_cast<double>(stats.batch_calls));
}

// A long prompt is prefilled in chunks between the decode steps of a running stream.
TEST(SchedulingTest, LongPromptPrefillIsChunked) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.prefill_chunk_tokens = 64;
  TestServer server(options);
  BackgroundStream running(server.stub(), LongRequest("running"));
  ASSERT_TRUE(running.WaitFirst());
  const int before = running.tokens();
  v1::GenerateRequest long_prompt = GreedyRequest(std::string(1500, 'x'), 4);
  long_prompt.mutable_cache_policy()->mutable_dense();
  const GenerateOutput output = Generate(server.stub(), long_prompt);
  ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  // 1500 tokens in 64-token chunks: ~24 steps, each also a decode step of the running stream.
  EXPECT_GE(running.tokens() - before, 20);
  EXPECT_GE(server.server().scheduler()->stats().prefill_chunks, 23u);
}

TEST(SchedulingTest, CancelFreesTheSlot) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.max_batch = 1;
  TestServer server(options);
  BackgroundStream first(server.stub(), LongRequest("first"));
  ASSERT_TRUE(first.WaitFirst());
  const auto cancelled_at = Clock::now();
  first.Cancel();
  const GenerateOutput second = Generate(server.stub(), GreedyRequest("second", 8));
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_LT(Seconds(Clock::now() - cancelled_at), 5.0);
  EXPECT_EQ(first.Join().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(first.tokens(), 4000);
  EXPECT_TRUE(WaitFor([&] {
    return MetricValue(Metrics(server), "sinkserve_num_requests_running{model_name=\"demo\"}") == 0;
  }));
  EXPECT_GE(MetricValue(Metrics(server),
                        "sinkserve_request_success_total{model_name=\"demo\",api=\"grpc\",finish_"
                        "reason=\"cancelled\"}"),
            1);
}

TEST(SchedulingTest, FullQueueIsResourceExhausted) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.max_batch = 1;
  options.scheduler.max_queue = 1;
  TestServer server(options);
  BackgroundStream running(server.stub(), LongRequest("running"));
  ASSERT_TRUE(running.WaitFirst());
  BackgroundStream queued(server.stub(), LongRequest("queued"));
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(Metrics(server), "sinkserve_num_requests_waiting{model_name=\"demo\"}") == 1;
  }));
  const GenerateOutput refused = Generate(server.stub(), GreedyRequest("refused", 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.status.error_message().rfind("queue:", 0), 0u)
      << refused.status.error_message();
  running.Cancel();
  ASSERT_TRUE(queued.WaitFirst());  // the queued request got the slot
  queued.Cancel();
  EXPECT_EQ(queued.Join().error_code(), grpc::StatusCode::CANCELLED);
  const GenerateOutput later = Generate(server.stub(), GreedyRequest("later", 4));
  EXPECT_TRUE(later.status.ok()) << later.status.error_message();
}

// Requests that free batch slots can take are not "waiting": --max-queue 0 still runs
// max_batch requests at once, and refuses the next.
TEST(SchedulingTest, FreeSlotsAreNotTheQueue) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.max_batch = 3;
  options.scheduler.max_queue = 0;
  TestServer server(options);
  std::vector<std::unique_ptr<BackgroundStream>> streams;
  for (int i = 0; i < 3; ++i) {
    streams.push_back(std::make_unique<BackgroundStream>(server.stub(), LongRequest("slot")));
  }
  for (auto& stream : streams) ASSERT_TRUE(stream->WaitFirst());
  const GenerateOutput refused = Generate(server.stub(), GreedyRequest("no slot", 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (auto& stream : streams) stream->Cancel();
}

TEST(SchedulingTest, DeadlineStopsTheWork) {
  TestServer server;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  const auto start = Clock::now();
  const GenerateOutput output = Generate(server.stub(), LongRequest("deadline"), &context);
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(Seconds(Clock::now() - start), 3.0);
  EXPECT_TRUE(WaitFor([&] {
    return MetricValue(Metrics(server), "sinkserve_num_requests_running{model_name=\"demo\"}") == 0;
  }));
  EXPECT_TRUE(Generate(server.stub(), GreedyRequest("after", 4)).status.ok());
}

TEST(SchedulingTest, OneRequestPerSessionAndCloseCancelsIt) {
  TestServer server;
  grpc::ClientContext context;
  v1::Session session;
  ASSERT_TRUE(server.stub().CreateSession(&context, v1::CreateSessionRequest(), &session).ok());
  v1::GenerateRequest request = LongRequest("busy");
  request.set_session_id(session.session_id());
  BackgroundStream running(server.stub(), request);
  ASSERT_TRUE(running.WaitFirst());
  const GenerateOutput second = Generate(server.stub(), request);
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(second.status.error_message().rfind("session_id:", 0), 0u);
  EXPECT_NE(second.status.error_message().find("busy"), std::string::npos);

  grpc::ClientContext close_context;
  v1::CloseSessionRequest close;
  close.set_session_id(session.session_id());
  v1::Session closed;
  ASSERT_TRUE(server.stub().CloseSession(&close_context, close, &closed).ok());
  EXPECT_GT(closed.tokens_seen(), 0u);
  EXPECT_EQ(running.Join().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(running.result().finish_reason(), v1::FINISH_REASON_CANCELLED);
}

v1::Session CreateSession(TestServer& server, const v1::CreateSessionRequest& request = {}) {
  grpc::ClientContext context;
  v1::Session session;
  const grpc::Status status = server.stub().CreateSession(&context, request, &session);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return session;
}

grpc::Status GetSession(TestServer& server, const std::string& id, v1::Session* session) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session_id(id);
  return server.stub().GetSession(&context, request, session);
}

TEST(SessionLimitsTest, IdleSessionsExpire) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.session_limits.ttl = std::chrono::milliseconds(300);
  TestServer server(options);
  const v1::Session session = CreateSession(server);
  v1::Session got;
  ASSERT_TRUE(GetSession(server, session.session_id(), &got).ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        return MetricValue(Metrics(server), "sinkserve_sessions_active{model_name=\"demo\"}") == 0;
      },
      std::chrono::seconds(5)));
  const grpc::Status status = GetSession(server, session.session_id(), &got);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("expired"), std::string::npos) << status.error_message();
  v1::GenerateRequest request = GreedyRequest("hi", 2);
  request.set_session_id(session.session_id());
  const GenerateOutput output = Generate(server.stub(), request);
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(output.status.error_message().find("expired"), std::string::npos);
}

TEST(SessionLimitsTest, LeastRecentlyUsedIsEvictedAtTheSessionLimit) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.session_limits.max_sessions = 2;
  TestServer server(options);
  const v1::Session a = CreateSession(server);
  const v1::Session b = CreateSession(server);
  v1::GenerateRequest use_a = GreedyRequest("a", 2);
  use_a.set_session_id(a.session_id());
  ASSERT_TRUE(Generate(server.stub(), use_a).status.ok());  // b is now the least recent
  const v1::Session c = CreateSession(server);
  v1::Session got;
  const grpc::Status evicted = GetSession(server, b.session_id(), &got);
  EXPECT_EQ(evicted.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(evicted.error_message().find("evicted"), std::string::npos);
  EXPECT_TRUE(GetSession(server, a.session_id(), &got).ok());
  grpc::ClientContext context;
  v1::ListSessionsResponse list;
  ASSERT_TRUE(server.stub().ListSessions(&context, v1::ListSessionsRequest(), &list).ok());
  ASSERT_EQ(list.sessions_size(), 2);
  EXPECT_EQ(list.sessions(0).session_id(), c.session_id());  // most recently used first
  EXPECT_EQ(list.sessions(1).session_id(), a.session_id());
  const grpc::Status unknown = GetSession(server, "s_0123456789abcdef", &got);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(unknown.error_message().find("unknown session"), std::string::npos);
}

TEST(SessionLimitsTest, CacheMemoryLimitEvictsThenRefuses) {
  // Demo model: a streaming (4 + 256) cache is (4 + 256 + 64 spare) slots × 4 layers × 2 × 256
  // × 4 B = 2,654,208 B; two fit under the limit, the third evicts the oldest.
  server::ServerOptions options = TestServerOptions();
  options.scheduler.session_limits.max_cache_bytes = 6'000'000;
  TestServer server(options);
  const v1::Session a = CreateSession(server);
  const v1::Session b = CreateSession(server);
  EXPECT_EQ(a.cache_bytes(), 2'654'208u);
  const v1::Session c = CreateSession(server);  // evicts a
  v1::Session got;
  EXPECT_EQ(GetSession(server, a.session_id(), &got).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(GetSession(server, c.session_id(), &got).ok());
  // A dense cache of the whole context (16.8 MB) can never fit.
  v1::CreateSessionRequest dense;
  dense.mutable_cache_policy()->mutable_dense();
  grpc::ClientContext context;
  v1::Session refused;
  const grpc::Status status = server.stub().CreateSession(&context, dense, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status.error_message().rfind("cache_policy:", 0), 0u) << status.error_message();
  EXPECT_GT(MetricValue(Metrics(server), "sinkserve_kv_cache_usage_ratio{model_name=\"demo\"}"),
            0.5);
}

}  // namespace
}  // namespace sinkserve::testing
