// The server as operators see it: health, reflection, /metrics (and a real Prometheus scraping
// it), and SIGTERM draining of the real `sinkserve` program.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <future>

#include "nlohmann/json.hpp"
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

// Every metric name of DESIGN §7 with its Prometheus type.
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
  EXPECT_EQ(MetricValue(metrics, "sinkserve_generation_tokens_total"), 300);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_prompt_tokens_total"), 7 + 14);  // prefill only
  EXPECT_EQ(MetricValue(metrics, "sinkserve_evicted_tokens_total"), 7 + 299 - 68);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_weights_bytes"), info.weights_bytes());
  EXPECT_EQ(MetricValue(metrics, "sinkserve_gpu_memory_used_bytes"), 0);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_time_to_first_token_seconds_count"), 1);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_inter_token_latency_seconds_count"), 299);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_e2e_request_latency_seconds_count"), 2);
  EXPECT_GT(MetricValue(metrics, "sinkserve_attention_seconds_count{phase=\"decode\"}"), 290);
  EXPECT_GT(MetricValue(metrics, "sinkserve_attention_seconds_sum{phase=\"decode\"}"), 0);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_request_success_total{finish_reason=\"length\"}"), 1);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_requests_total{api=\"grpc\",code=\"OK\",rpc=\"Generate\"}"), 1);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_requests_total{api=\"grpc\",code=\"OK\",rpc=\"GetModelInfo\"}"), 1);
  EXPECT_NE(metrics.find("sinkserve_model_info{backend=\"cpu (1 threads"), std::string::npos);
  EXPECT_NE(metrics.find("quant=\"as stored (F32)\",sink=\"4\",window=\"256\"} 1"), std::string::npos);

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

// A real Prometheus scrapes the server and answers PromQL queries with its data.
TEST(LifecycleTest, PrometheusScrapesTheServer) {
  const char* prometheus = "/usr/bin/prometheus";
  if (access(prometheus, X_OK) != 0) {
    GTEST_SKIP() << "prometheus is not installed (scripts/install-deps.sh installs it)";
  }
  TestServer server;
  ASSERT_TRUE(Generate(server.stub(), GreedyRequest("scrape me", 32)).status.ok());
  TempDir dir;
  const int web_port = FreePort();
  WriteTextFile(dir.File("prometheus.yml"),
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: sinkserve\n    static_configs:\n"
                "      - targets: ['127.0.0.1:" +
                    std::to_string(server.server().metrics_port()) + "']\n");
  ChildProcess process({prometheus, "--config.file=" + dir.File("prometheus.yml"),
                        "--storage.tsdb.path=" + dir.File("data"),
                        "--web.listen-address=127.0.0.1:" + std::to_string(web_port),
                        "--log.level=warn"},
                       dir.File("prometheus.log"));
  ASSERT_GT(process.pid(), 0);
  auto query = [&](const std::string& promql) -> nlohmann::json {
    std::string encoded;
    for (char c : promql) {
      char hex[4];
      std::snprintf(hex, sizeof(hex), "%%%02X", static_cast<unsigned char>(c));
      encoded += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ? std::string(1, c) : hex;
    }
    const std::string body = HttpGet(web_port, "/api/v1/query?query=" + encoded);
    nlohmann::json json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    return json.is_object() ? json : nlohmann::json();
  };
  nlohmann::json tokens;
  const bool scraped = WaitFor(
      [&] {
        tokens = query("sinkserve_generation_tokens_total");
        return tokens.is_object() && tokens["status"] == "success" &&
               !tokens["data"]["result"].empty();
      },
      std::chrono::seconds(45));
  ASSERT_TRUE(scraped) << ReadTextFile(dir.File("prometheus.log"));
  EXPECT_EQ(tokens["data"]["result"][0]["value"][1], "32");
  EXPECT_EQ(tokens["data"]["result"][0]["metric"]["job"], "sinkserve");
  const nlohmann::json ttft =
      query("histogram_quantile(0.5, sum by (le) (sinkserve_time_to_first_token_seconds_bucket))");
  ASSERT_EQ(ttft["status"], "success");
  EXPECT_FALSE(ttft["data"]["result"].empty());
  process.Signal(SIGTERM);
  EXPECT_TRUE(process.Wait(std::chrono::seconds(20)).has_value());
}

// Grace period over: what is still running is cancelled, its stream ends UNAVAILABLE with a
// final message saying so.
TEST(LifecycleTest, DrainCancelsWhatOutlivesTheGracePeriod) {
  TestServer server;
  std::future<GenerateOutput> running = std::async(std::launch::async, [&] {
    return Generate(server.stub(), GreedyRequest("forever", 4000));
  });
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(HttpGet(server.server().metrics_port(), "/metrics"),
                       "sinkserve_generation_tokens_total") > 0;
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

}  // namespace
}  // namespace sinkserve::testing
