// Overload: a burst of 10× the queue limit at once. The excess is refused RESOURCE_EXHAUSTED
// at once (no queueing, no work), every admitted request completes, and the latency of the
// admitted ones is bounded by their place in line (batch + queue), not by the burst.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <random>

#include "tests/server/server_test_util.h"
#include "tests/unit/test_util.h"

namespace sinkserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Timed {
  GenerateOutput output;
  double seconds = 0;
};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

TEST(OverloadTest, TenTimesTheQueueLimitAtOnce) {
  constexpr int kBatch = 2, kQueue = 4, kBurst = 10 * kQueue, kTokens = 48;
  server::ServerOptions options = TestServerOptions();
  options.scheduler.max_batch = kBatch;
  options.scheduler.max_queue = kQueue;
  TestServer server(options);
  const uint64_t seed = TestSeed();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);

  // One request alone: the unit of service time.
  const auto alone_start = Clock::now();
  ASSERT_TRUE(Generate(server.stub(), GreedyRequest("alone", kTokens)).status.ok());
  const double alone = std::chrono::duration<double>(Clock::now() - alone_start).count();

  // Every client connected first (a stub per client), then all released at once.
  std::vector<std::unique_ptr<v1::Sinkserve::Stub>> stubs;
  for (int i = 0; i < kBurst; ++i) stubs.push_back(server.NewStub());
  std::promise<void> go;
  std::shared_future<void> released = go.get_future().share();
  std::vector<std::future<Timed>> calls;
  for (int i = 0; i < kBurst; ++i) {
    v1::GenerateRequest request = GreedyRequest("burst " + std::to_string(rng()), kTokens);
    calls.push_back(std::async(std::launch::async, [&, i, request] {
      released.wait();
      const auto start = Clock::now();
      Timed timed{Generate(*stubs[i], request)};
      timed.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      return timed;
    }));
  }
  go.set_value();

  std::vector<double> admitted, refused;
  for (auto& call : calls) {
    const Timed timed = call.get();
    EXPECT_TRUE(StreamComplete(timed.output));
    if (timed.output.status.ok()) {
      EXPECT_EQ(timed.output.token_ids.size(), static_cast<size_t>(kTokens));
      admitted.push_back(timed.seconds);
    } else {
      ASSERT_EQ(timed.output.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << timed.output.status.error_message();
      EXPECT_NE(timed.output.status.error_message().find("max-queue"), std::string::npos)
          << timed.output.status.error_message();
      EXPECT_TRUE(timed.output.token_ids.empty());
      refused.push_back(timed.seconds);
    }
  }
  const double refused_p50 = Percentile(refused, 0.5), refused_max = Percentile(refused, 1.0);
  const double admitted_p50 = Percentile(admitted, 0.5), admitted_max = Percentile(admitted, 1.0);
  std::printf(
      "overload: burst %d (batch %d, queue %d), alone %.3f s; admitted %zu (p50 %.3f s, max "
      "%.3f s), refused %zu (p50 %.1f ms, max %.1f ms)\n",
      kBurst, kBatch, kQueue, alone, admitted.size(), admitted_p50, admitted_max, refused.size(),
      refused_p50 * 1e3, refused_max * 1e3);
  ::testing::Test::RecordProperty("admitted", static_cast<int>(admitted.size()));
  ::testing::Test::RecordProperty("refused", static_cast<int>(refused.size()));

  // Most of the burst is refused; what fits the batch and the queue is admitted.
  EXPECT_GE(admitted.size(), static_cast<size_t>(kBatch + kQueue));
  EXPECT_GE(refused.size(), static_cast<size_t>(kBurst / 2));
  // Refusals are fast: no queueing, no engine work (the bound leaves room for a loaded CI
  // machine); and each is far below the service time of one admitted request.
  EXPECT_LT(refused_max, 1.0);
  EXPECT_LT(refused_p50, alone);
  // Admitted latency is bounded by the line ahead: (batch + queue) / batch service times, with
  // slack for sharing two cores with 40 client threads.
  EXPECT_LT(admitted_max, 4.0 * alone * (kBatch + kQueue) / kBatch + 2.0);

  // After the burst the server is idle and serves again at once.
  EXPECT_TRUE(WaitFor([&] {
    const std::string metrics = HttpGet(server.server().metrics_port(), "/metrics");
    return MetricValue(metrics, "sinkserve_num_requests_running{model_name=\"demo\"}") == 0 &&
           MetricValue(metrics, "sinkserve_num_requests_waiting{model_name=\"demo\"}") == 0;
  }));
  EXPECT_TRUE(Generate(server.stub(), GreedyRequest("after", 4)).status.ok());
}

}  // namespace
}  // namespace sinkserve::testing
