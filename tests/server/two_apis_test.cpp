// One engine behind both APIs: a real server on loopback with its gRPC port and its OpenAI HTTP
// port (server/http), a gRPC client and cpp-httplib's HTTP client. An engine error names the
// field each client sent, in its API's words (gRPC `prompt_token_ids` / `prompt_text`, OpenAI
// `prompt`) and a limit by the server's flag; every request metric carries the api it came by.
#include <gtest/gtest.h>
#include <httplib.h>

#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/http/openai_server.h"
#include "tests/server/server_test_util.h"

namespace sinkserve::testing {
namespace {

using Json = nlohmann::json;

// A server with the HTTP API on a free port beside gRPC.
class TwoApiServer {
 public:
  explicit TwoApiServer(server::ServerOptions options = TestServerOptions())
      : server_(WithHttp(std::move(options), &http_)) {}

  TestServer& grpc() { return server_; }

  // POST /v1/completions: the HTTP status and the JSON body.
  std::pair<int, Json> Complete(const Json& body) {
    httplib::Client client("127.0.0.1", http_->port());
    client.set_read_timeout(60, 0);
    const httplib::Result result = client.Post("/v1/completions", body.dump(), "application/json");
    if (!result) return {0, Json()};
    return {result->status, Json::parse(result->body, nullptr, /*allow_exceptions=*/false)};
  }

  std::string Metrics() { return HttpGet(server_.server().metrics_port(), "/metrics"); }

 private:
  static server::ServerOptions WithHttp(server::ServerOptions options,
                                        server::http::OpenAiServer** http) {
    options.make_frontends = [http](server::Metrics& metrics) {
      server::http::HttpOptions http_options;
      http_options.host = "127.0.0.1";
      http_options.port = 0;
      http_options.model_id = "demo";
      auto frontend = std::make_unique<server::http::OpenAiServer>(http_options, &metrics);
      *http = frontend.get();
      std::vector<std::unique_ptr<server::Frontend>> frontends;
      frontends.push_back(std::move(frontend));
      return frontends;
    };
    return options;
  }

  server::http::OpenAiServer* http_ = nullptr;  // owned by server_
  TestServer server_;
};

// `count` random byte-token ids (the demo model's tokenizer is byte-level).
std::vector<uint32_t> RandomIds(int count) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<uint32_t> byte(32, 126);
  std::vector<uint32_t> ids(count);
  for (uint32_t& id : ids) id = byte(rng);
  return ids;
}

// A kept session with a dense cache of `capacity` tokens.
std::string DenseSession(TestServer& server, int capacity) {
  v1::CreateSessionRequest request;
  request.mutable_cache_policy()->mutable_dense()->set_capacity_tokens(capacity);
  grpc::ClientContext context;
  v1::Session session;
  const grpc::Status status = server.stub().CreateSession(&context, request, &session);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return session.session_id();
}

bool StartsWith(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

TEST(TwoApisTest, APromptThatDoesNotFitASessionNamesTheFieldSent) {
  TwoApiServer server;
  const std::string session = DenseSession(server.grpc(), 16);
  const std::vector<uint32_t> ids = RandomIds(20);

  v1::GenerateRequest by_ids;
  by_ids.set_session_id(session);
  by_ids.mutable_prompt_token_ids()->Add(ids.begin(), ids.end());
  by_ids.set_max_new_tokens(1);
  const GenerateOutput ids_output = Generate(server.grpc().stub(), by_ids);
  EXPECT_EQ(ids_output.status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_TRUE(
      StartsWith(ids_output.status.error_message(), "prompt_token_ids: 20 tokens do not fit"))
      << ids_output.status.error_message();

  v1::GenerateRequest by_text;
  by_text.set_session_id(session);
  by_text.set_prompt_text(std::string(ids.begin(), ids.end()));
  by_text.set_max_new_tokens(1);
  const GenerateOutput text_output = Generate(server.grpc().stub(), by_text);
  EXPECT_EQ(text_output.status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_TRUE(StartsWith(text_output.status.error_message(), "prompt_text: 20 tokens do not fit"))
      << text_output.status.error_message();

  const auto [status, body] =
      server.Complete({{"prompt", ids}, {"session_id", session}, {"max_tokens", 1}});
  EXPECT_EQ(status, 400) << body;
  ASSERT_TRUE(body.contains("error")) << body;
  EXPECT_EQ(body["error"]["param"], "prompt") << body;
  EXPECT_EQ(body["error"]["code"], "out_of_range") << body;
  EXPECT_TRUE(StartsWith(body["error"]["message"].get<std::string>(),
                         "prompt: 20 tokens do not fit session " + session))
      << body;

  // The session is unharmed and still serves a prompt that fits, over both APIs.
  by_ids.mutable_prompt_token_ids()->Truncate(4);
  EXPECT_TRUE(Generate(server.grpc().stub(), by_ids).status.ok());
  const std::vector<uint32_t> few(ids.begin(), ids.begin() + 4);
  EXPECT_EQ(server.Complete({{"prompt", few}, {"session_id", session}, {"max_tokens", 1}}).first,
            200);
}

TEST(TwoApisTest, ALimitNamesTheServerFlag) {
  // A dense cache of the demo model's whole context (16.8 MB) never fits 6 MB.
  server::ServerOptions options = TestServerOptions();
  options.scheduler.session_limits.max_cache_bytes = 6'000'000;
  TwoApiServer server(options);
  const auto [status, body] = server.Complete(
      {{"prompt", "Hello"}, {"cache_policy", "dense"}, {"keep_session", true}, {"max_tokens", 1}});
  EXPECT_EQ(status, 429) << body;
  const std::string message = body["error"]["message"].get<std::string>();
  EXPECT_TRUE(StartsWith(message, "cache_policy: ")) << message;
  EXPECT_NE(message.find("the server's --max-cache-bytes"), std::string::npos) << message;
  EXPECT_EQ(message.find("max_cache_bytes"), std::string::npos) << message;

  v1::GenerateRequest request = GreedyRequest("Hello", 1);
  request.mutable_cache_policy()->mutable_dense();
  request.set_keep_session(true);
  const GenerateOutput output = Generate(server.grpc().stub(), request);
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(output.status.error_message(), message);
}

TEST(TwoApisTest, AnExpiredSessionNamesTheTtlFlag) {
  server::ServerOptions options = TestServerOptions();
  options.scheduler.session_limits.ttl = std::chrono::milliseconds(200);
  TwoApiServer server(options);
  const std::string session = DenseSession(server.grpc(), 16);
  std::pair<int, Json> answer;
  ASSERT_TRUE(WaitFor([&] {
    answer = server.Complete({{"prompt", "Hi"}, {"session_id", session}, {"max_tokens", 1}});
    return answer.first == 404;
  })) << answer.second;
  const std::string message = answer.second["error"]["message"].get<std::string>();
  EXPECT_TRUE(StartsWith(message, "session_id: session " + session + " expired")) << message;
  EXPECT_NE(message.find("(the server's --session-ttl-s)"), std::string::npos) << message;
  v1::GenerateRequest request = GreedyRequest("Hi", 1);
  request.set_session_id(session);
  const GenerateOutput output = Generate(server.grpc().stub(), request);
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(output.status.error_message(), message);
}

TEST(TwoApisTest, RequestMetricsCarryTheApi) {
  TwoApiServer server;
  ASSERT_TRUE(Generate(server.grpc().stub(), GreedyRequest("by gRPC", 4)).status.ok());
  const auto [status, body] = server.Complete(
      {{"prompt", "by HTTP"}, {"max_tokens", 3}, {"temperature", 0}, {"ignore_eos", true}});
  ASSERT_EQ(status, 200) << body;
  const std::string metrics = server.Metrics();
  for (const auto& [api, tokens] :
       {std::pair<std::string, double>{"grpc", 4}, std::pair<std::string, double>{"openai", 3}}) {
    const std::string labels = "{model_name=\"demo\",api=\"" + api + "\"}";
    EXPECT_EQ(MetricValue(metrics, "sinkserve_time_to_first_token_seconds_count" + labels), 1)
        << api;
    EXPECT_EQ(MetricValue(metrics, "sinkserve_e2e_request_latency_seconds_count" + labels), 1)
        << api;
    EXPECT_EQ(MetricValue(metrics, "sinkserve_request_queue_time_seconds_count" + labels), 1)
        << api;
    EXPECT_EQ(MetricValue(metrics, "sinkserve_generation_tokens_total" + labels), tokens) << api;
    EXPECT_EQ(MetricValue(metrics, "sinkserve_inter_token_latency_seconds_count" + labels),
              tokens - 1)
        << api;
    EXPECT_GT(MetricValue(metrics, "sinkserve_prompt_tokens_total" + labels), 0) << api;
    EXPECT_EQ(MetricValue(metrics, "sinkserve_request_success_total{model_name=\"demo\",api=\"" +
                                       api + "\",finish_reason=\"length\"}"),
              1)
        << api;
  }
  // Per-step series have no api label: one step serves both APIs.
  EXPECT_GT(MetricValue(metrics, "sinkserve_batch_rows_count{model_name=\"demo\"}"), 0);
}

}  // namespace
}  // namespace sinkserve::testing
