// The server as operators see it: health, reflection, /metrics (and a real Prometheus scraping
// it, and stalled clients that must not block it), start-up checks of the flags, and SIGTERM
// draining of the real `sinkserve` program.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <future>
#include <optional>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/metrics.h"
#include "tests/server/server_test_util.h"
#include "tests/unit/test_util.h"

namespace sinkserve::testing {
namespace {

using HealthStatus = grpc::health::v1::HealthCheckResponse;

HealthStatus::ServingStatus Health(std::shared_ptr<grpc::Channel> channel,
                                   const std::string& service = "") {
  std::unique_ptr<grpc::health::v1::Health::Stub> stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  HealthStatus response;
  const grpc::Status status = stub->Check(&context, request, &response);
  return status.ok() ? response.status() : HealthStatus::UNKNOWN;
}

// Every metric name of docs/metrics.md with its Prometheus type.
const std::vector<std::pair<std::string, std::string>> kDesignMetrics = {
    {"time_to_first_token_seconds", "histogram"},
    {"time_per_output_token_seconds", "histogram"},
    {"inter_token_latency_seconds", "histogram"},
    {"e2e_request_latency_seconds", "histogram"},
    {"request_queue_time_seconds", "histogram"},
    {"attention_seconds", "histogram"},
    {"gpu_memory_used_bytes", "gauge"},
    {"gpu_memory_peak_bytes", "gauge"},
    {"gpu_memory_total_bytes", "gauge"},
    {"weights_bytes", "gauge"},
    {"kv_cache_bytes", "gauge"},
    {"kv_cache_usage_ratio", "gauge"},
    {"num_requests_running", "gauge"},
    {"num_requests_waiting", "gauge"},
    {"sessions_active", "gauge"},
    {"prompt_tokens_total", "counter"},
    {"generation_tokens_total", "counter"},
    {"requests_total", "counter"},
    {"request_success_total", "counter"},
    {"evicted_tokens_total", "counter"},
    {"model_info", "gauge"},
};

TEST(LifecycleTest, HealthReflectionAndEveryMetric) {
  TestServer server;
  EXPECT_EQ(Health(server.channel()), HealthStatus::SERVING);
  EXPECT_EQ(Health(server.channel(), "sinkserve.v1.Sinkserve"), HealthStatus::SERVING);

  grpc::ClientContext info_context;
  v1::ModelInfo info;
  ASSERT_TRUE(server.stub().GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_TRUE(info.demo());
  EXPECT_EQ(info.architecture(), "GPTNeoXForCausalLM");
  EXPECT_EQ(info.vocab_size(), 257u);
  EXPECT_EQ(info.context_tokens(), 2048u);
  EXPECT_EQ(info.eos_token_id(), 256u);
  EXPECT_EQ(info.default_cache_policy().streaming().window_tokens(), 256u);
  EXPECT_EQ(info.limits().max_batch(), 16u);
  EXPECT_GT(info.weights_bytes(), 0u);

  // Some traffic, so that every series has data.
  v1::GenerateRequest request = GreedyRequest("metrics", 300);
  request.mutable_cache_policy()->mutable_streaming()->set_sink_tokens(4);
  request.mutable_cache_policy()->mutable_streaming()->set_window_tokens(64);
  ASSERT_TRUE(Generate(server.stub(), request).status.ok());
  grpc::ClientContext score_context;
  v1::ScoreRequest score;
  score.set_text("a text to score");
  auto reader = server.stub().Score(&score_context, score);
  v1::ScoreResponse response;
  while (reader->Read(&response)) {
  }
  ASSERT_TRUE(reader->Finish().ok());

  const std::string metrics = HttpGet(server.server().metrics_port(), "/metrics");
  for (const auto& [name, type] : kDesignMetrics) {
    EXPECT_NE(metrics.find("# TYPE sinkserve_" + name + " " + type + "\n"), std::string::npos)
        << name;
  }
  EXPECT_EQ(
      MetricValue(metrics, "sinkserve_generation_tokens_total{model_name=\"demo\",api=\"grpc\"}"),
      300);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_prompt_tokens_total{model_name=\"demo\",api=\"grpc\"}"),
            7 + 14);  // prefill only
  EXPECT_EQ(
      MetricValue(metrics, "sinkserve_evicted_tokens_total{model_name=\"demo\",api=\"grpc\"}"),
      7 + 299 - 68);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_weights_bytes{model_name=\"demo\"}"),
            info.weights_bytes());
  EXPECT_EQ(MetricValue(metrics, "sinkserve_gpu_memory_used_bytes{model_name=\"demo\"}"), 0);
  EXPECT_EQ(
      MetricValue(metrics,
                  "sinkserve_time_to_first_token_seconds_count{model_name=\"demo\",api=\"grpc\"}"),
      1);
  EXPECT_EQ(
      MetricValue(metrics,
                  "sinkserve_inter_token_latency_seconds_count{model_name=\"demo\",api=\"grpc\"}"),
      299);
  EXPECT_EQ(
      MetricValue(metrics,
                  "sinkserve_e2e_request_latency_seconds_count{model_name=\"demo\",api=\"grpc\"}"),
      2);
  EXPECT_GT(MetricValue(metrics,
                        "sinkserve_attention_seconds_count{model_name=\"demo\",phase=\"decode\"}"),
            290);
  EXPECT_GT(
      MetricValue(metrics, "sinkserve_attention_seconds_sum{model_name=\"demo\",phase=\"decode\"}"),
      0);
  EXPECT_EQ(MetricValue(metrics,
                        "sinkserve_request_success_total{model_name=\"demo\",api=\"grpc\",finish_"
                        "reason=\"length\"}"),
            1);
  EXPECT_EQ(MetricValue(metrics,
                        "sinkserve_requests_total{model_name=\"demo\",api=\"grpc\",code=\"OK\",rpc="
                        "\"Generate\"}"),
            1);
  EXPECT_EQ(MetricValue(metrics,
                        "sinkserve_requests_total{model_name=\"demo\",api=\"grpc\",code=\"OK\",rpc="
                        "\"GetModelInfo\"}"),
            1);
  EXPECT_NE(metrics.find("sinkserve_model_info{model_name=\"demo\",backend=\"cpu (1 threads"),
            std::string::npos);
  EXPECT_NE(metrics.find("quant=\"as stored (F32)\",sink=\"4\",window=\"256\"} 1"),
            std::string::npos);

  // Server reflection lists both services (raw bytes: ServerReflectionRequest.list_services).
  class ReflectionCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit ReflectionCall(std::shared_ptr<grpc::Channel> channel) : stub_(channel) {
      grpc::Slice slice(std::string("\x3a\x00", 2));
      request_ = grpc::ByteBuffer(&slice, 1);
      stub_.PrepareBidiStreamingCall(
          &context_, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
          grpc::StubOptions(), this);
      StartWriteLast(&request_, grpc::WriteOptions());
      StartRead(&response_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;
      std::vector<grpc::Slice> slices;
      (void)response_.Dump(&slices);
      for (const grpc::Slice& slice : slices) {
        bytes_.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      }
      StartRead(&response_);
    }
    void OnDone(const grpc::Status& status) override { done_.set_value(status); }
    std::string Wait() {
      EXPECT_TRUE(done_.get_future().get().ok());
      return bytes_;
    }

   private:
    grpc::GenericStub stub_;
    grpc::ClientContext context_;
    grpc::ByteBuffer request_, response_;
    std::string bytes_;
    std::promise<grpc::Status> done_;
  };
  ReflectionCall reflection(server.channel());
  const std::string services = reflection.Wait();
  EXPECT_NE(services.find("sinkserve.v1.Sinkserve"), std::string::npos);
  EXPECT_NE(services.find("grpc.health.v1.Health"), std::string::npos);
}

// `sinkserve health` (the image's HEALTHCHECK): exit 0 while SERVING, 1 once draining.
TEST(LifecycleTest, HealthCommandProbesTheServer) {
  TestServer server;
  TempDir dir;
  auto probe = [&] {
    ChildProcess process({std::string(SINKSERVE_BINARY_DIR) + "/server/sinkserve", "health",
                          "--address", "127.0.0.1:" + std::to_string(server.server().port())},
                         dir.File("health.log"));
    return process.Wait(std::chrono::seconds(20));
  };
  EXPECT_EQ(probe(), 0) << ReadTextFile(dir.File("health.log"));
  EXPECT_EQ(ReadTextFile(dir.File("health.log")), "SERVING\n");
  server.server().Drain(std::chrono::milliseconds(0));
  EXPECT_EQ(probe(), 1);
}

// Behind a load balancer, every answer names the replica that gave it (--server-id, default
// hostname:port): the affinity test and clients see where a session's cache lives.
TEST(LifecycleTest, ServerIdNamesTheReplica) {
  server::ServerOptions options = TestServerOptions();
  options.server_id = "replica-a";
  TestServer named(options);
  grpc::ClientContext info_context;
  v1::ModelInfo info;
  ASSERT_TRUE(named.stub().GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.server_id(), "replica-a");
  const GenerateOutput generated = Generate(named.stub(), GreedyRequest("which replica?", 4));
  ASSERT_TRUE(generated.has_result);
  EXPECT_EQ(generated.result.server_id(), "replica-a");
  grpc::ClientContext score_context;
  v1::ScoreRequest score;
  score.set_text("scored where?");
  auto reader = named.stub().Score(&score_context, score);
  v1::ScoreResponse response, last;
  while (reader->Read(&response)) last = response;
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(last.result().server_id(), "replica-a");

  TestServer unnamed;
  const GenerateOutput defaulted = Generate(unnamed.stub(), GreedyRequest("and here?", 2));
  ASSERT_TRUE(defaulted.has_result);
  const std::string suffix = ":" + std::to_string(unnamed.server().port());
  EXPECT_TRUE(defaulted.result.server_id().ends_with(suffix)) << defaulted.result.server_id();
  EXPECT_GT(defaulted.result.server_id().size(), suffix.size());
}

// Debian's Prometheus scraping 127.0.0.1:`metrics_port` every second, answering PromQL.
class Prometheus {
 public:
  static constexpr char kProgram[] = "/usr/bin/prometheus";
  static bool Installed() { return access(kProgram, X_OK) == 0; }

  explicit Prometheus(int metrics_port) : web_port_(FreePort()) {
    WriteTextFile(dir_.File("prometheus.yml"),
                  "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                  "scrape_configs:\n  - job_name: sinkserve\n    static_configs:\n"
                  "      - targets: ['127.0.0.1:" +
                      std::to_string(metrics_port) + "']\n");
    process_.emplace(
        std::vector<std::string>{kProgram, "--config.file=" + dir_.File("prometheus.yml"),
                                 "--storage.tsdb.path=" + dir_.File("data"),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(web_port_),
                                 "--log.level=warn"},
        dir_.File("prometheus.log"));
  }

  bool started() const { return process_->pid() > 0; }
  std::string log() const { return ReadTextFile(dir_.File("prometheus.log")); }

  // The query's JSON answer, or null when Prometheus does not answer (yet).
  nlohmann::json Query(const std::string& promql) const {
    std::string encoded;
    for (char c : promql) {
      char hex[4];
      std::snprintf(hex, sizeof(hex), "%%%02X", static_cast<unsigned char>(c));
      encoded += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ? std::string(1, c) : hex;
    }
    const std::string body = HttpGet(web_port_, "/api/v1/query?query=" + encoded);
    nlohmann::json json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    return json.is_object() ? json : nlohmann::json();
  }

  // Waits (up to 45 s: the first scrape) until `promql` has a result; returns it (or null).
  nlohmann::json Scraped(const std::string& promql) const {
    nlohmann::json answer;
    const bool scraped = WaitFor(
        [&] {
          answer = Query(promql);
          return answer.is_object() && answer["status"] == "success" &&
                 !answer["data"]["result"].empty();
        },
        std::chrono::seconds(45));
    return scraped ? answer : nlohmann::json();
  }

  // SIGTERM; true when it exited.
  bool Stop() {
    process_->Signal(SIGTERM);
    return process_->Wait(std::chrono::seconds(20)).has_value();
  }

 private:
  TempDir dir_;
  int web_port_;
  std::optional<ChildProcess> process_;
};

// A real Prometheus scrapes the server and answers PromQL queries with its data.
TEST(LifecycleTest, PrometheusScrapesTheServer) {
  if (!Prometheus::Installed()) {
    GTEST_SKIP() << "prometheus is not installed (scripts/install-deps.sh installs it)";
  }
  TestServer server;
  ASSERT_TRUE(Generate(server.stub(), GreedyRequest("scrape me", 32)).status.ok());
  Prometheus prometheus(server.server().metrics_port());
  ASSERT_TRUE(prometheus.started());
  const nlohmann::json tokens =
      prometheus.Scraped("sinkserve_generation_tokens_total{api=\"grpc\"}");
  ASSERT_FALSE(tokens.is_null()) << prometheus.log();
  EXPECT_EQ(tokens["data"]["result"][0]["value"][1], "32");
  EXPECT_EQ(tokens["data"]["result"][0]["metric"]["job"], "sinkserve");
  EXPECT_EQ(tokens["data"]["result"][0]["metric"]["model_name"], "demo");
  const nlohmann::json ttft = prometheus.Query(
      "histogram_quantile(0.5, sum by (le) (sinkserve_time_to_first_token_seconds_bucket))");
  ASSERT_EQ(ttft["status"], "success");
  EXPECT_FALSE(ttft["data"]["result"].empty());
  EXPECT_TRUE(prometheus.Stop());
}

// The histograms resolve a GPU's latencies: observations like an H100's (ITL and TPOT about
// 2.2 ms, TTFT 12-18 ms, queue 1-2 ms) give PromQL p99s strictly inside a bucket, near the
// truth, where vLLM's edges alone put every ITL in the first bucket (0, 10 ms]. Every
// sinkserve_* series carries model_name.
TEST(LifecycleTest, HistogramsResolveGpuLatencies) {
  if (!Prometheus::Installed()) {
    GTEST_SKIP() << "prometheus is not installed (scripts/install-deps.sh installs it)";
  }
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> per_token(0.0020, 0.0024), ttft(0.012, 0.018),
      queue(0.0011, 0.0019);
  server::Metrics metrics("pythia-2.8b");
  ASSERT_TRUE(metrics.Expose("127.0.0.1:0").ok());
  for (int i = 0; i < 400; ++i) {
    metrics.OnAdmitted("grpc", queue(rng));
    metrics.OnFirstToken("grpc", ttft(rng));
    metrics.OnInterToken("grpc", per_token(rng));
    GenerateResult result;
    result.generated_tokens = 100;
    result.timings.time_per_output_token_seconds = per_token(rng);
    metrics.OnGenerateFinished("grpc", result);
  }
  const std::string exposition = HttpGet(metrics.port(), "/metrics");
  // New edges, and vLLM's kept.
  for (const std::string series : {"sinkserve_time_per_output_token_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.001\"}",
                                   "sinkserve_time_per_output_token_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.01\"}",
                                   "sinkserve_inter_token_latency_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.001\"}",
                                   "sinkserve_inter_token_latency_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.025\"}",
                                   "sinkserve_time_to_first_token_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.005\"}",
                                   "sinkserve_time_to_first_token_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.0075\"}",
                                   "sinkserve_time_to_first_token_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.02\"}",
                                   "sinkserve_request_queue_time_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.001\"}",
                                   "sinkserve_request_queue_time_seconds_bucket{model_name="
                                   "\"pythia-2.8b\",api=\"grpc\",le=\"0.3\"}"}) {
    EXPECT_GE(MetricValue(exposition, series), 0) << series << " missing";
  }
  for (const absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::StartsWith(line, "sinkserve_")) continue;
    EXPECT_TRUE(absl::StrContains(line, "model_name=\"pythia-2.8b\"")) << line;
  }

  Prometheus prometheus(metrics.port());
  ASSERT_TRUE(prometheus.started());
  ASSERT_FALSE(prometheus.Scraped("sinkserve_inter_token_latency_seconds_count").is_null())
      << prometheus.log();
  struct Expected {
    const char* histogram;
    double bucket_low, bucket_high;  // the bucket the p99 must fall strictly inside
    double truth;                    // the p99 of the distribution observed
  };
  for (const Expected& expected :
       {Expected{"sinkserve_inter_token_latency_seconds", 0.002, 0.0025, 0.002396},
        Expected{"sinkserve_time_per_output_token_seconds", 0.002, 0.0025, 0.002396},
        Expected{"sinkserve_time_to_first_token_seconds", 0.015, 0.02, 0.01794},
        Expected{"sinkserve_request_queue_time_seconds", 0.001, 0.0025, 0.001892}}) {
    const nlohmann::json answer = prometheus.Query(
        absl::StrCat("histogram_quantile(0.99, sum by (le) (", expected.histogram, "_bucket))"));
    ASSERT_EQ(answer["status"], "success") << answer;
    ASSERT_FALSE(answer["data"]["result"].empty()) << expected.histogram;
    const double p99 = std::stod(answer["data"]["result"][0]["value"][1].get<std::string>());
    EXPECT_GT(p99, expected.bucket_low) << expected.histogram << " (seed " << seed << ")";
    EXPECT_LT(p99, expected.bucket_high) << expected.histogram << " (seed " << seed << ")";
    EXPECT_NEAR(p99, expected.truth, 0.35 * expected.truth) << expected.histogram;
  }
  EXPECT_TRUE(prometheus.Stop());
}

// Grace period over: what is still running is cancelled, its stream ends UNAVAILABLE with a
// final message saying so.
TEST(LifecycleTest, DrainCancelsWhatOutlivesTheGracePeriod) {
  TestServer server;
  std::future<GenerateOutput> running = std::async(
      std::launch::async, [&] { return Generate(server.stub(), GreedyRequest("forever", 4000)); });
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(HttpGet(server.server().metrics_port(), "/metrics"),
                       "sinkserve_generation_tokens_total{model_name=\"demo\",api=\"grpc\"}") > 0;
  }));
  EXPECT_FALSE(server.server().Drain(std::chrono::milliseconds(200)));
  const GenerateOutput output = running.get();
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_TRUE(output.has_result);
  EXPECT_EQ(output.result.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_GT(output.result.generated_tokens(), 0u);
  EXPECT_LT(output.result.generated_tokens(), 4000u);
}

// The real program: SIGTERM → health NOT_SERVING, new requests refused, in-flight streams
// complete, exit 0.
TEST(LifecycleTest, SigtermDrainsTheProgram) {
  TempDir dir;
  // No command: `sinkserve` serves (here with flags, so that the ports are free ones).
  ServingProgram program(dir.File("server.log"), {"--metrics-port", "0", "--grace-period-s", "60"});
  ASSERT_GT(program.port(), 0) << program.log();
  std::shared_ptr<grpc::Channel> channel = program.channel();
  std::unique_ptr<v1::Sinkserve::Stub> stub = v1::Sinkserve::NewStub(channel);
  EXPECT_EQ(Health(channel), HealthStatus::SERVING);

  constexpr int kTokens = 1500;
  std::vector<std::future<GenerateOutput>> streams;
  std::atomic<int> started{0};
  for (int i = 0; i < 2; ++i) {
    streams.push_back(std::async(std::launch::async, [&, i] {
      grpc::ClientContext context;
      GenerateOutput output;
      auto reader = stub->Generate(&context, GreedyRequest("drain " + std::to_string(i), kTokens));
      v1::GenerateResponse response;
      while (reader->Read(&response)) {
        if (output.token_ids.empty()) ++started;
        output.token_ids.insert(output.token_ids.end(), response.token_ids().begin(),
                                response.token_ids().end());
        if (response.has_result()) output.result = response.result();
      }
      output.status = reader->Finish();
      return output;
    }));
  }
  ASSERT_TRUE(WaitFor([&] { return started == 2; }));
  program.process().Signal(SIGTERM);
  EXPECT_TRUE(WaitFor([&] { return Health(channel) == HealthStatus::NOT_SERVING; },
                      std::chrono::seconds(5)));
  const GenerateOutput refused = Generate(*stub, GreedyRequest("too late", 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  for (auto& stream : streams) {
    const GenerateOutput output = stream.get();
    EXPECT_TRUE(output.status.ok()) << output.status.error_message();
    EXPECT_EQ(output.token_ids.size(), static_cast<size_t>(kTokens));
    EXPECT_EQ(output.result.finish_reason(), v1::FINISH_REASON_LENGTH);
  }
  const std::optional<int> exit_code = program.process().Wait(std::chrono::seconds(30));
  ASSERT_TRUE(exit_code.has_value());
  EXPECT_EQ(*exit_code, 0) << ReadTextFile(dir.File("server.log"));
  const std::string log = ReadTextFile(dir.File("server.log"));
  EXPECT_NE(log.find("\"msg\":\"draining\""), std::string::npos);
  EXPECT_NE(log.find("\"in_flight\":\"all finished\""), std::string::npos);
  // One JSON line per finished request, with its timings.
  EXPECT_NE(log.find("\"rpc\":\"Generate\",\"request_id\""), std::string::npos);
  EXPECT_NE(log.find("\"ttft_ms\":"), std::string::npos);
}

// Connections to a port that never finish a request: `idle` send nothing, `slow` send a request
// header one byte every 100 ms and never end it. One the server closes is opened again, so the
// flood keeps its strength for as long as it runs.
class StalledConnections {
 public:
  StalledConnections(int port, int idle, int slow)
      : port_(port), idle_(idle), fds_(idle + slow, -1), thread_([this] { Run(); }) {}
  ~StalledConnections() {
    stop_ = true;
    thread_.join();
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }
  // Slow-header connections the server has closed so far.
  int slow_closed() const { return slow_closed_; }
  bool all_open() const { return all_open_; }

 private:
  void Run() {
    while (!stop_) {
      bool all_open = true;
      for (size_t i = 0; i < fds_.size(); ++i) {
        const bool slow = static_cast<int>(i) >= idle_;
        pollfd ready{fds_[i], POLLIN, 0};
        if (fds_[i] >= 0 && poll(&ready, 1, 0) > 0) {  // an answer (408) or the end: closed
          close(fds_[i]);
          fds_[i] = -1;
          if (slow) ++slow_closed_;
        }
        if (fds_[i] < 0) {
          fds_[i] = ConnectLoopback(port_);
          if (fds_[i] >= 0 && slow) {
            const std::string start = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
            (void)send(fds_[i], start.data(), start.size(), MSG_NOSIGNAL);
          }
        } else if (slow) {
          (void)send(fds_[i], "a", 1, MSG_NOSIGNAL);
        }
        all_open = all_open && fds_[i] >= 0;
      }
      all_open_ = all_open;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  const int port_;
  const int idle_;
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> all_open_{false};
  std::atomic<int> slow_closed_{0};
  std::thread thread_;
};

// Idle and slow-header connections (a port scan, stalled clients) do not keep Prometheus from
// scraping: with 100 idle and 10 slow-header connections open all along, /metrics answers
// within a second, again and again, and the slow ones are cut off.
TEST(LifecycleTest, MetricsAnswerThroughIdleAndSlowConnections) {
  TestServer server;
  const int port = server.server().metrics_port();
  StalledConnections flood(port, /*idle=*/100, /*slow=*/10);
  ASSERT_TRUE(WaitFor([&] { return flood.all_open(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the server has them all
  for (int i = 0; i < 25; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const std::string metrics = HttpGet(port, "/metrics", std::chrono::seconds(5));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_NE(metrics.find("# TYPE sinkserve_kv_cache_bytes gauge"), std::string::npos)
        << "scrape " << i << " got no answer within 5 s";
    EXPECT_LT(seconds, 1.0) << "scrape " << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_GE(flood.slow_closed(), 10) << "slow-header connections are never cut off";
}

// A session can no more be created than a request started once the server drains.
TEST(LifecycleTest, CreateSessionIsRefusedWhileDraining) {
  server::ServerOptions options = TestServerOptions();
  options.limits.max_new_tokens = 1 << 20;
  TestServer server(options);
  grpc::ClientContext stream_context;  // holds the drain until the test cancels it
  std::future<GenerateOutput> running = std::async(std::launch::async, [&] {
    return Generate(server.stub(), GreedyRequest("hold the drain", 1 << 20), &stream_context);
  });
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(HttpGet(server.server().metrics_port(), "/metrics"),
                       "sinkserve_generation_tokens_total{model_name=\"demo\",api=\"grpc\"}") > 0;
  }));
  std::future<bool> drained = std::async(
      std::launch::async, [&] { return server.server().Drain(std::chrono::seconds(60)); });
  ASSERT_TRUE(WaitFor([&] { return Health(server.channel()) == HealthStatus::NOT_SERVING; }));
  grpc::ClientContext context;
  v1::Session session;
  const grpc::Status status =
      server.stub().CreateSession(&context, v1::CreateSessionRequest(), &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("draining"), std::string::npos) << status.error_message();
  EXPECT_EQ(running.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the drain ended before CreateSession was tried";
  stream_context.TryCancel();
  EXPECT_EQ(running.get().status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(drained.get());
}

// sinkserve_kv_cache_bytes shows what the process holds: a live session's cache as
// state="active", the same cache kept for reuse after the session closed as state="pooled".
TEST(LifecycleTest, PooledCachesHaveTheirOwnSeries) {
  TestServer server;
  const int port = server.server().metrics_port();
  auto kv = [&](const char* state) {
    return MetricValue(
        HttpGet(port, "/metrics"),
        std::string("sinkserve_kv_cache_bytes{model_name=\"demo\",state=\"") + state + "\"}");
  };
  EXPECT_EQ(kv("active"), 0);
  EXPECT_EQ(kv("pooled"), 0);
  v1::Session session;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(server.stub().CreateSession(&context, v1::CreateSessionRequest(), &session).ok());
  }
  ASSERT_GT(session.cache_bytes(), 0u);
  const double bytes = static_cast<double>(session.cache_bytes());
  EXPECT_TRUE(WaitFor([&] { return kv("active") == bytes && kv("pooled") == 0; }))
      << kv("active") << " " << kv("pooled");
  {
    grpc::ClientContext context;
    v1::CloseSessionRequest request;
    request.set_session_id(session.session_id());
    v1::Session closed;
    ASSERT_TRUE(server.stub().CloseSession(&context, request, &closed).ok());
  }
  EXPECT_TRUE(WaitFor([&] { return kv("active") == 0 && kv("pooled") == bytes; }))
      << kv("active") << " " << kv("pooled");
  // The next session of that policy takes the pooled cache.
  {
    grpc::ClientContext context;
    ASSERT_TRUE(server.stub().CreateSession(&context, v1::CreateSessionRequest(), &session).ok());
  }
  EXPECT_TRUE(WaitFor([&] { return kv("active") == bytes && kv("pooled") == 0; }))
      << kv("active") << " " << kv("pooled");
}

// Flags the server cannot serve with are refused at start-up, named as they were written.
TEST(LifecycleTest, ServeRefusesFlagsItCannotServeWith) {
  TempDir dir;
  struct Case {
    std::vector<std::string> flags;
    int exit_code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--sink", "5000"}, 1, "--sink 5000 --window 256: the server's default cache policy"},
      {{"--window", "2045"}, 1, "must be at most the model's context of 2048, got 2049"},
      {{"--grace-period-s", "-1"},
       2,
       "--grace-period-s must be in [0, 1000000000] seconds, got -1"},
      {{"--session-ttl-s", "0"},
       2,
       "--session-ttl-s must be in [0.001, 1000000000] seconds, got 0"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> flags = {"--metrics-port", "-1"};
    flags.insert(flags.end(), c.flags.begin(), c.flags.end());
    ServingProgram program(dir.File("server.log"), flags);
    EXPECT_EQ(program.port(), 0) << c.flags[0];
    EXPECT_EQ(program.process().Wait(std::chrono::seconds(30)), std::optional<int>(c.exit_code))
        << c.flags[0] << "\n"
        << program.log();
    EXPECT_NE(program.log().find(c.message), std::string::npos) << program.log();
  }
  // Within the context it serves.
  ServingProgram fits(dir.File("fits.log"),
                      {"--metrics-port", "-1", "--sink", "4", "--window", "2044"});
  EXPECT_GT(fits.port(), 0) << fits.log();
}

// The exit comes within the grace period (+1 s) although a client holds an idle TCP socket and
// an idle gRPC connection, and a stream outlives the grace period.
TEST(LifecycleTest, ExitComesWithinTheGracePeriodDespiteIdleConnections) {
  TempDir dir;
  ServingProgram program(dir.File("server.log"), {"--metrics-port", "0", "--grace-period-s", "1",
                                                  "--max-new-tokens", "1000000"});
  ASSERT_GT(program.port(), 0) << program.log();
  const int idle_socket = ConnectLoopback(program.port());
  ASSERT_GE(idle_socket, 0);
  std::shared_ptr<grpc::Channel> idle_channel = program.channel();
  ASSERT_TRUE(
      idle_channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  std::unique_ptr<v1::Sinkserve::Stub> stub = v1::Sinkserve::NewStub(program.channel());
  std::atomic<bool> started{false};
  std::future<GenerateOutput> stream = std::async(std::launch::async, [&] {
    grpc::ClientContext context;
    GenerateOutput output;
    auto reader = stub->Generate(&context, GreedyRequest("outlive the grace period", 1000000));
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      started = true;
      if (response.has_result()) {
        output.result = response.result();
        output.has_result = true;
      }
    }
    output.status = reader->Finish();
    return output;
  });
  ASSERT_TRUE(WaitFor([&] { return started.load(); }));
  const auto start = std::chrono::steady_clock::now();
  program.process().Signal(SIGTERM);
  const std::optional<int> exit_code = program.process().Wait(std::chrono::seconds(30));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(exit_code, std::optional<int>(0)) << program.log();
  EXPECT_LT(seconds, 1.0 + 1.0) << program.log();
  const GenerateOutput output = stream.get();
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(output.has_result) << "the cancelled stream got no final message";
  EXPECT_NE(program.log().find("\"in_flight\":\"some cancelled after the grace period\""),
            std::string::npos)
      << program.log();
  close(idle_socket);
}

// A second SIGTERM cancels at once, and the log says so.
TEST(LifecycleTest, SecondSigtermCancelsAndTheLogSaysSo) {
  TempDir dir;
  ServingProgram program(dir.File("server.log"), {"--metrics-port", "0", "--grace-period-s", "600",
                                                  "--max-new-tokens", "1000000"});
  ASSERT_GT(program.port(), 0) << program.log();
  std::unique_ptr<v1::Sinkserve::Stub> stub = v1::Sinkserve::NewStub(program.channel());
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyRequest("cut short", 1000000));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  program.process().Signal(SIGTERM);
  ASSERT_TRUE(
      WaitFor([&] { return program.log().find("\"msg\":\"draining\"") != std::string::npos; }));
  const auto start = std::chrono::steady_clock::now();
  program.process().Signal(SIGTERM);
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_EQ(program.process().Wait(std::chrono::seconds(30)), std::optional<int>(0));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
  const std::string log = program.log();
  EXPECT_NE(log.find("\"in_flight\":\"some cancelled by the second signal\""), std::string::npos)
      << log;
  EXPECT_EQ(log.find("all finished"), std::string::npos) << log;
}

}  // namespace
}  // namespace sinkserve::testing
