// Malformed and extreme requests: every one gets the docs/api.md code and a message that starts
// with the offending field, and the server keeps serving a stream running alongside.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <future>
#include <limits>

#include "absl/strings/str_cat.h"
#include "tests/server/server_test_util.h"

namespace sinkserve::testing {
namespace {

struct Case {
  std::string name;
  std::function<void(v1::GenerateRequest&)> mutate;
  grpc::StatusCode code;
  std::string field;  // the message starts with "<field>:"
};

v1::GenerateRequest Valid() { return GreedyRequest("hello", 4); }

std::vector<Case> GenerateCases() {
  const std::string long_prompt(5000, 'y');
  return {
      {"text and ids", [](auto& r) { r.add_prompt_token_ids(1); }, grpc::StatusCode::INVALID_ARGUMENT, "prompt_text"},
      {"id outside the vocabulary",
       [](auto& r) {
         r.clear_prompt_text();
         r.add_prompt_token_ids(5);
         r.add_prompt_token_ids(999999);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt_token_ids[1]"},
      {"invalid UTF-8 prompt", [](auto& r) { r.set_prompt_text("ab\xff\xfe"); }, grpc::StatusCode::INVALID_ARGUMENT, "prompt_text"},
      {"overlong UTF-8 prompt", [](auto& r) { r.set_prompt_text("\xc0\xaf"); }, grpc::StatusCode::INVALID_ARGUMENT, "prompt_text"},
      {"prompt over the limit", [long_prompt](auto& r) { r.set_prompt_text(long_prompt); }, grpc::StatusCode::INVALID_ARGUMENT, "prompt_text"},
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"NaN temperature", [](auto& r) { r.mutable_sampling()->set_temperature(std::nanf("")); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"infinite temperature", [](auto& r) { r.mutable_sampling()->set_temperature(INFINITY); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"huge top_k", [](auto& r) { r.mutable_sampling()->set_top_k(100000); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_k"},
      {"top_p 0", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"top_p 1.5", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"repetition_penalty 0", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.repetition_penalty"},
      {"repetition_penalty 1e9", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(1e9f); }, grpc::StatusCode::INVALID_ARGUMENT, "sampling.repetition_penalty"},
      {"max_new_tokens over the limit", [](auto& r) { r.set_max_new_tokens(1u << 31); }, grpc::StatusCode::INVALID_ARGUMENT, "max_new_tokens"},
      {"too many stop strings",
       [](auto& r) {
         for (int i = 0; i < 17; ++i) r.add_stop_strings(absl::StrCat("s", i));
       },
       grpc::StatusCode::INVALID_ARGUMENT, "stop_strings"},
      {"empty stop string", [](auto& r) { r.add_stop_strings(""); }, grpc::StatusCode::INVALID_ARGUMENT, "stop_strings[0]"},
      {"long stop string", [](auto& r) { r.add_stop_strings(std::string(300, 'z')); }, grpc::StatusCode::INVALID_ARGUMENT, "stop_strings[0]"},
      {"invalid UTF-8 stop string",
       [](auto& r) {
         r.add_stop_strings("fine");
         r.add_stop_strings("\xed\xa0\x80");  // a UTF-16 surrogate
       },
       grpc::StatusCode::INVALID_ARGUMENT, "stop_strings[1]"},
      {"stop id outside the vocabulary", [](auto& r) { r.add_stop_token_ids(257); }, grpc::StatusCode::INVALID_ARGUMENT, "stop_token_ids[0]"},
      {"too many stop ids",
       [](auto& r) {
         for (int i = 0; i < 65; ++i) r.add_stop_token_ids(1);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "stop_token_ids"},
      {"session id with a space", [](auto& r) { r.set_session_id("bad id"); }, grpc::StatusCode::INVALID_ARGUMENT, "session_id"},
      {"session id too long", [](auto& r) { r.set_session_id(std::string(100, 'a')); }, grpc::StatusCode::INVALID_ARGUMENT, "session_id"},
      {"invalid UTF-8 session id", [](auto& r) { r.set_session_id("s_\xff"); }, grpc::StatusCode::INVALID_ARGUMENT, "session_id"},
      {"unknown session", [](auto& r) { r.set_session_id("s_does_not_exist"); }, grpc::StatusCode::NOT_FOUND, "session_id"},
      {"keep_session with a session",
       [](auto& r) {
         r.set_session_id("s_x");
         r.set_keep_session(true);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "keep_session"},
      {"policy with a session",
       [](auto& r) {
         r.set_session_id("s_x");
         r.mutable_cache_policy()->mutable_dense();
       },
       grpc::StatusCode::INVALID_ARGUMENT, "cache_policy"},
      {"empty policy", [](auto& r) { r.mutable_cache_policy(); }, grpc::StatusCode::INVALID_ARGUMENT, "cache_policy"},
      {"window 0", [](auto& r) { r.mutable_cache_policy()->mutable_streaming()->set_sink_tokens(4); }, grpc::StatusCode::INVALID_ARGUMENT, "cache_policy.streaming.window_tokens"},
      {"sink + window over the context",
       [](auto& r) {
         r.mutable_cache_policy()->mutable_streaming()->set_sink_tokens(4294967295u);
         r.mutable_cache_policy()->mutable_streaming()->set_window_tokens(4294967295u);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "cache_policy.streaming"},
      {"dense capacity over the context", [](auto& r) { r.mutable_cache_policy()->mutable_dense()->set_capacity_tokens(5000); }, grpc::StatusCode::INVALID_ARGUMENT, "cache_policy.dense.capacity_tokens"},
      {"dense prompt over the context",
       [](auto& r) {
         r.set_prompt_text(std::string(3000, 'd'));
         r.mutable_cache_policy()->mutable_dense();
       },
       grpc::StatusCode::OUT_OF_RANGE, "prompt_text"},
      {"dense prompt over the capacity",
       [](auto& r) {
         r.set_prompt_text(std::string(200, 'd'));
         r.mutable_cache_policy()->mutable_dense()->set_capacity_tokens(100);
       },
       grpc::StatusCode::OUT_OF_RANGE, "prompt_text"},
  };
}

class ValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options = TestServerOptions();
    options.limits.max_prompt_tokens = 4096;
    options.limits.max_score_tokens = 4096;
    server_ = std::make_unique<TestServer>(options);
  }

  // Sends raw bytes to `method` (a malformed message no generated stub would produce).
  grpc::Status RawCall(const std::string& method, const std::string& bytes) {
    grpc::GenericStub stub(server_->channel());
    grpc::ClientContext context;
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status status) { done.set_value(status); });
    return done.get_future().get();
  }

  std::unique_ptr<TestServer> server_;
};

void ExpectRefused(const grpc::Status& status, grpc::StatusCode code, const std::string& field,
                   const std::string& name) {
  EXPECT_EQ(status.error_code(), code) << name << ": " << status.error_message();
  EXPECT_EQ(status.error_message().rfind(field + ":", 0), 0u)
      << name << ": the message should start with \"" << field << ":\", got \""
      << status.error_message() << "\"";
}

TEST_F(ValidationTest, EveryGenerateFieldIsCheckedWhileAStreamRuns) {
  // A stream that runs through the whole barrage and must come out intact.
  std::unique_ptr<Model> model = LoadDemoModel();
  std::unique_ptr<KvCache> cache = *model->backend().NewCache(CachePolicy{});
  const std::vector<int32_t> expected =
      OfflineGreedy(*model, *cache, *model->tokenizer()->Encode("keep going"), 300);
  std::unique_ptr<v1::Sinkserve::Stub> other = server_->NewStub();
  std::future<GenerateOutput> running = std::async(std::launch::async, [&] {
    return Generate(*other, GreedyRequest("keep going", 300));
  });

  for (const Case& test : GenerateCases()) {
    v1::GenerateRequest request = Valid();
    test.mutate(request);
    const GenerateOutput output = Generate(server_->stub(), request);
    ExpectRefused(output.status, test.code, test.field, test.name);
    EXPECT_TRUE(output.responses.empty()) << test.name;
  }
  // Bytes that are no protobuf at all.
  ExpectRefused(RawCall("/sinkserve.v1.Sinkserve/Generate", "\xff\xff\xff\xff\x0f garbage"),
                grpc::StatusCode::INVALID_ARGUMENT, "request", "garbage");
  ExpectRefused(RawCall("/sinkserve.v1.Sinkserve/GetSession", std::string("\x0a\x05", 2)),
                grpc::StatusCode::INVALID_ARGUMENT, "request", "truncated");
  // Invalid UTF-8 nested in a message field: the path names it.
  v1::GenerateRequest nested = Valid();
  nested.add_stop_strings("\x80");
  ExpectRefused(Generate(server_->stub(), nested).status, grpc::StatusCode::INVALID_ARGUMENT,
                "stop_strings[0]", "raw stop string");

  const GenerateOutput survivor = running.get();
  ASSERT_TRUE(survivor.status.ok()) << survivor.status.error_message();
  EXPECT_EQ(survivor.token_ids, expected);
  EXPECT_TRUE(Generate(server_->stub(), Valid()).status.ok());
}

TEST_F(ValidationTest, ScoreAndSessionFields) {
  auto score = [&](const std::function<void(v1::ScoreRequest&)>& mutate) {
    v1::ScoreRequest request;
    request.set_text("a valid text");
    mutate(request);
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<v1::ScoreResponse>> reader =
        server_->stub().Score(&context, request);
    v1::ScoreResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  };
  EXPECT_TRUE(score([](auto&) {}).ok());
  ExpectRefused(score([](auto& r) { r.set_text("a"); }), grpc::StatusCode::INVALID_ARGUMENT, "text", "one token");
  ExpectRefused(score([](auto& r) { r.add_token_ids(1); }), grpc::StatusCode::INVALID_ARGUMENT, "text", "text and ids");
  ExpectRefused(score([](auto& r) {
                  r.clear_text();
                  r.add_token_ids(1);
                  r.add_token_ids(300);
                }),
                grpc::StatusCode::INVALID_ARGUMENT, "token_ids[1]", "id outside the vocabulary");
  ExpectRefused(score([](auto& r) { r.set_text(std::string(5000, 'q')); }), grpc::StatusCode::INVALID_ARGUMENT, "text", "over the limit");
  ExpectRefused(score([](auto& r) {
                  r.set_text(std::string(3000, 'q'));
                  r.mutable_cache_policy()->mutable_dense();
                }),
                grpc::StatusCode::OUT_OF_RANGE, "text", "dense over the context");
  ExpectRefused(score([](auto& r) { r.set_text("\xf4\x90\x80\x80 beyond U+10FFFF"); }), grpc::StatusCode::INVALID_ARGUMENT, "text", "invalid UTF-8");

  grpc::ClientContext get_context;
  v1::Session session;
  ExpectRefused(server_->stub().GetSession(&get_context, v1::GetSessionRequest(), &session),
                grpc::StatusCode::INVALID_ARGUMENT, "session_id", "empty id");
  grpc::ClientContext close_context;
  v1::CloseSessionRequest close;
  close.set_session_id("s_unknown");
  ExpectRefused(server_->stub().CloseSession(&close_context, close, &session),
                grpc::StatusCode::NOT_FOUND, "session_id", "unknown id");
  v1::CreateSessionRequest create;
  create.mutable_sampling_defaults()->set_top_p(2);
  grpc::ClientContext create_context;
  ExpectRefused(server_->stub().CreateSession(&create_context, create, &session),
                grpc::StatusCode::INVALID_ARGUMENT, "sampling_defaults.top_p", "bad default");
  create.Clear();
  create.mutable_cache_policy()->mutable_streaming();
  grpc::ClientContext create_context2;
  ExpectRefused(server_->stub().CreateSession(&create_context2, create, &session),
                grpc::StatusCode::INVALID_ARGUMENT, "cache_policy.streaming.window_tokens",
                "window 0");

  // Every refusal was counted, by method and code (a stream is counted when the server is done
  // with it, which may be just after its client saw the status).
  std::string metrics;
  EXPECT_TRUE(WaitFor([&] {
    metrics = HttpGet(server_->server().metrics_port(), "/metrics");
    return MetricValue(metrics,
                       "sinkserve_requests_total{model_name=\"demo\",api=\"grpc\",code=\"INVALID_ARGUMENT\",rpc="
                       "\"Score\"}") >= 5;
  }));
  EXPECT_GE(
      MetricValue(
          metrics,
          "sinkserve_requests_total{model_name=\"demo\",api=\"grpc\",code=\"OUT_OF_RANGE\",rpc=\"Score\"}"),
      1);
  EXPECT_GE(
      MetricValue(
          metrics,
          "sinkserve_requests_total{model_name=\"demo\",api=\"grpc\",code=\"NOT_FOUND\",rpc=\"CloseSession\"}"),
      1);
}

}  // namespace
}  // namespace sinkserve::testing
