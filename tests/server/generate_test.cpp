// Generate and Score over real gRPC against the offline engine: greedy tokens, sessions,
// stop conditions, batching, cancellation, queue limits, deadlines.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "engine/perplexity.h"
#include "tests/server/server_test_util.h"

namespace sinkserve::testing {
namespace {

std::vector<int32_t> Encode(Model& model, const std::string& text) {
  absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer()->Encode(text);
  EXPECT_TRUE(ids.ok());
  return *ids;
}

class GenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer();
    model_ = LoadDemoModel().release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete model_;
  }
  static TestServer* server_;
  static Model* model_;
};
TestServer* GenerateTest::server_ = nullptr;
Model* GenerateTest::model_ = nullptr;

TEST_F(GenerateTest, GreedyStreamEqualsTheOfflineEngine) {
  const std::string prompt = "The attention sink is";
  const GenerateOutput output = Generate(server_->stub(), GreedyRequest(prompt, 40));
  ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  std::unique_ptr<KvCache> cache = *model_->backend().NewCache(CachePolicy{});
  const std::vector<int32_t> expected = OfflineGreedy(*model_, *cache, Encode(*model_, prompt), 40);
  EXPECT_EQ(output.token_ids, expected);
  EXPECT_EQ(output.text, model_->tokenizer()->DecodeLossy(expected));
  ASSERT_TRUE(output.has_result);
  const v1::GenerateResult& result = output.result;
  EXPECT_EQ(result.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.generated_tokens(), 40u);
  EXPECT_EQ(result.prompt_tokens(), Encode(*model_, prompt).size());
  EXPECT_GT(result.time_to_first_token_ms(), 0);
  EXPECT_GT(result.time_per_output_token_ms(), 0);
  EXPECT_GE(result.e2e_latency_ms(), result.time_to_first_token_ms());
  EXPECT_GT(result.attention_time_ms(), 0);
  EXPECT_GE(result.queue_time_ms(), 0);
  EXPECT_FALSE(result.request_id().empty());
  EXPECT_TRUE(output.session_id.empty());  // one-shot
  EXPECT_GT(output.responses.size(), 1u);  // streamed
}

// A long prompt through a small streaming window: chunked prefill up to the window, then
// one-token rows, with evictions; still the offline engine's tokens.
TEST_F(GenerateTest, LongPromptThroughASmallWindowEqualsTheOfflineEngine) {
  std::string prompt;
  for (int i = 0; i < 12; ++i) prompt += "Streaming caches keep sinks and a window. ";
  v1::GenerateRequest request = GreedyRequest(prompt, 24);
  request.mutable_cache_policy()->mutable_streaming()->set_sink_tokens(4);
  request.mutable_cache_policy()->mutable_streaming()->set_window_tokens(32);
  const GenerateOutput output = Generate(server_->stub(), request);
  ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  CachePolicy policy;
  policy.sink_tokens = 4;
  policy.window_tokens = 32;
  std::unique_ptr<KvCache> cache = *model_->backend().NewCache(policy);
  const std::vector<int32_t> ids = Encode(*model_, prompt);
  EXPECT_EQ(output.token_ids, OfflineGreedy(*model_, *cache, ids, 24));
  EXPECT_EQ(output.result.evicted_tokens(),
            static_cast<uint64_t>(ids.size() + 23 - 36));  // fed tokens beyond sink + window
}

TEST_F(GenerateTest, DenseOneShotAndTokenIdPrompt) {
  v1::GenerateRequest request;
  for (int32_t id : Encode(*model_, "Dense caches keep everything")) {
    request.add_prompt_token_ids(static_cast<uint32_t>(id));
  }
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_max_new_tokens(16);
  request.set_ignore_eos(true);
  request.mutable_cache_policy()->mutable_dense();
  const GenerateOutput output = Generate(server_->stub(), request);
  ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  std::unique_ptr<KvCache> cache = *model_->backend().NewDenseCache(64);
  EXPECT_EQ(output.token_ids,
            OfflineGreedy(*model_, *cache, Encode(*model_, "Dense caches keep everything"), 16));
  EXPECT_EQ(output.result.evicted_tokens(), 0u);
}

// Two turns on a session equal one offline stream: the last generated token of turn 1 is fed
// at the start of turn 2.
TEST_F(GenerateTest, SessionContinuesTheStream) {
  v1::CreateSessionRequest create;
  create.mutable_cache_policy()->mutable_streaming()->set_sink_tokens(4);
  create.mutable_cache_policy()->mutable_streaming()->set_window_tokens(48);
  create.mutable_sampling_defaults()->set_temperature(0.0f);
  grpc::ClientContext context;
  v1::Session session;
  ASSERT_TRUE(server_->stub().CreateSession(&context, create, &session).ok());
  EXPECT_EQ(session.session_id().substr(0, 2), "s_");
  EXPECT_EQ(session.tokens_seen(), 0u);

  v1::GenerateRequest turn1;
  turn1.set_session_id(session.session_id());
  turn1.set_prompt_text("User: hello there.\n");
  turn1.set_max_new_tokens(30);
  turn1.set_ignore_eos(true);  // sampling comes from the session's defaults (greedy)
  const GenerateOutput out1 = Generate(server_->stub(), turn1);
  ASSERT_TRUE(out1.status.ok()) << out1.status.error_message();
  EXPECT_EQ(out1.session_id, session.session_id());
  v1::GenerateRequest turn2 = turn1;
  turn2.set_prompt_text("User: and then?\n");
  turn2.set_max_new_tokens(20);
  const GenerateOutput out2 = Generate(server_->stub(), turn2);
  ASSERT_TRUE(out2.status.ok()) << out2.status.error_message();

  CachePolicy policy;
  policy.sink_tokens = 4;
  policy.window_tokens = 48;
  std::unique_ptr<KvCache> cache = *model_->backend().NewCache(policy);
  const std::vector<int32_t> p1 = Encode(*model_, "User: hello there.\n");
  const std::vector<int32_t> g1 = OfflineGreedy(*model_, *cache, p1, 30);
  EXPECT_EQ(out1.token_ids, g1);
  std::vector<int32_t> p2 = {g1.back()};
  for (int32_t id : Encode(*model_, "User: and then?\n")) p2.push_back(id);
  EXPECT_EQ(out2.token_ids, OfflineGreedy(*model_, *cache, p2, 20));
  EXPECT_EQ(out2.result.prompt_tokens(), p2.size());

  // The session's state: everything fed but the last generated token.
  const v1::Session& after = out2.result.session();
  EXPECT_EQ(after.tokens_seen(), p1.size() + 29 + p2.size() + 19);
  EXPECT_EQ(after.tokens_cached(), 52u);
  EXPECT_EQ(after.tokens_evicted(), after.tokens_seen() - 52);
  EXPECT_EQ(after.requests(), 2u);
  EXPECT_FALSE(after.busy());
  grpc::ClientContext get_context;
  v1::GetSessionRequest get;
  get.set_session_id(session.session_id());
  v1::Session got;
  ASSERT_TRUE(server_->stub().GetSession(&get_context, get, &got).ok());
  EXPECT_EQ(got.tokens_seen(), after.tokens_seen());
  EXPECT_EQ(got.cache_bytes(), session.cache_bytes());
  EXPECT_GT(got.expires_in_ms(), 0);

  // An empty prompt continues from the last generated token.
  v1::GenerateRequest turn3;
  turn3.set_session_id(session.session_id());
  turn3.set_max_new_tokens(5);
  turn3.set_ignore_eos(true);
  const GenerateOutput out3 = Generate(server_->stub(), turn3);
  ASSERT_TRUE(out3.status.ok()) << out3.status.error_message();
  EXPECT_EQ(out3.token_ids, OfflineGreedy(*model_, *cache, {out2.token_ids.back()}, 5));

  grpc::ClientContext close_context;
  v1::CloseSessionRequest close;
  close.set_session_id(session.session_id());
  v1::Session closed;
  ASSERT_TRUE(server_->stub().CloseSession(&close_context, close, &closed).ok());
  const GenerateOutput gone = Generate(server_->stub(), turn3);
  EXPECT_EQ(gone.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(gone.status.error_message().find("closed"), std::string::npos);
}

TEST_F(GenerateTest, KeepSessionCreatesOneFromGenerate) {
  v1::GenerateRequest request = GreedyRequest("Once upon a time", 8);
  request.set_keep_session(true);
  const GenerateOutput first = Generate(server_->stub(), request);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_FALSE(first.session_id.empty());
  EXPECT_EQ(first.responses.front().session_id(), first.session_id);  // known from the start
  v1::GenerateRequest next = GreedyRequest(" and", 8);
  next.set_session_id(first.session_id);
  const GenerateOutput second = Generate(server_->stub(), next);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  std::unique_ptr<KvCache> cache = *model_->backend().NewCache(CachePolicy{});
  const std::vector<int32_t> g1 =
      OfflineGreedy(*model_, *cache, Encode(*model_, "Once upon a time"), 8);
  std::vector<int32_t> p2 = {g1.back()};
  for (int32_t id : Encode(*model_, " and")) p2.push_back(id);
  EXPECT_EQ(second.token_ids, OfflineGreedy(*model_, *cache, p2, 8));
}

// The x-session-id metadata (the key deploy/'s affinity hashes) names the session when the
// request's session_id is empty: a Generate with keep_session or a CreateSession creates it
// under that id, later calls reach it by the metadata alone; both set and different is refused.
TEST_F(GenerateTest, XSessionIdMetadataNamesTheSession) {
  const std::string id = "conv-" + std::to_string(TestSeed());
  const auto call = [](const std::string& session_id) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->AddMetadata("x-session-id", session_id);
    return context;
  };
  v1::GenerateRequest request = GreedyRequest("Once upon a time", 8);
  request.set_keep_session(true);
  const GenerateOutput first = Generate(server_->stub(), request, call(id).get());
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.session_id, id);
  // Continued by the metadata alone: the tokens of the offline engine's continuation.
  const GenerateOutput second = Generate(server_->stub(), GreedyRequest(" and", 8), call(id).get());
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(second.result.session().session_id(), id);
  std::unique_ptr<KvCache> cache = *model_->backend().NewCache(CachePolicy{});
  const std::vector<int32_t> g1 =
      OfflineGreedy(*model_, *cache, Encode(*model_, "Once upon a time"), 8);
  std::vector<int32_t> p2 = {g1.back()};
  for (int32_t token : Encode(*model_, " and")) p2.push_back(token);
  EXPECT_EQ(second.token_ids, OfflineGreedy(*model_, *cache, p2, 8));

  // The field and the metadata disagree.
  v1::GenerateRequest both = GreedyRequest(" then", 2);
  both.set_session_id(id);
  const GenerateOutput mismatch = Generate(server_->stub(), both, call(id + "-other").get());
  EXPECT_EQ(mismatch.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(mismatch.status.error_message().rfind("session_id: ", 0), 0u)
      << mismatch.status.error_message();
  // Both alike is fine.
  EXPECT_TRUE(Generate(server_->stub(), both, call(id).get()).status.ok());

  // The id is taken.
  v1::Session session;
  EXPECT_EQ(server_->stub().CreateSession(call(id).get(), {}, &session).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  // CreateSession under the client's id; GetSession and CloseSession by the metadata alone.
  const std::string other = id + "-b";
  ASSERT_TRUE(server_->stub().CreateSession(call(other).get(), {}, &session).ok());
  EXPECT_EQ(session.session_id(), other);
  ASSERT_TRUE(server_->stub().GetSession(call(other).get(), {}, &session).ok());
  EXPECT_EQ(session.session_id(), other);
  for (const std::string& closed : {id, other}) {
    ASSERT_TRUE(server_->stub().CloseSession(call(closed).get(), {}, &session).ok());
    EXPECT_EQ(server_->stub().GetSession(call(closed).get(), {}, &session).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // An id outside the session id rules is refused, naming session_id.
  const grpc::Status bad = server_->stub().CreateSession(call("not an id").get(), {}, &session);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad.error_message().rfind("session_id: ", 0), 0u) << bad.error_message();
}

TEST_F(GenerateTest, StopStringsAndStopTokens) {
  const GenerateOutput free_run = Generate(server_->stub(), GreedyRequest("Stop here:", 40));
  ASSERT_TRUE(free_run.status.ok());
  ASSERT_GE(free_run.text.size(), 20u);
  // A stop string taken from the middle of the greedy text (3 ASCII characters): the text ends
  // right before its first occurrence.
  size_t from = 10;
  while (from + 3 < free_run.text.size() &&
         !std::all_of(free_run.text.begin() + from, free_run.text.begin() + from + 3,
                      [](char c) { return c > 0x20 && c < 0x7f; })) {
    ++from;
  }
  ASSERT_LT(from + 3, free_run.text.size());
  const std::string stop = free_run.text.substr(from, 3);
  const size_t first = free_run.text.find(stop);
  v1::GenerateRequest request = GreedyRequest("Stop here:", 40);
  request.add_stop_strings("this never appears \xe2\x9c\x93");
  request.add_stop_strings(stop);
  const GenerateOutput stopped = Generate(server_->stub(), request);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.text, free_run.text.substr(0, first));
  EXPECT_EQ(stopped.result.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_NE(stopped.result.finish_detail().find("stop string"), std::string::npos);
  EXPECT_LT(stopped.token_ids.size(), free_run.token_ids.size());
  EXPECT_EQ(stopped.token_ids,
            std::vector<int32_t>(free_run.token_ids.begin(),
                                 free_run.token_ids.begin() + stopped.token_ids.size()));

  // A stop token: generation ends after it, its text is not returned.
  v1::GenerateRequest by_token = GreedyRequest("Stop here:", 40);
  by_token.add_stop_token_ids(static_cast<uint32_t>(free_run.token_ids[5]));
  const GenerateOutput token_stopped = Generate(server_->stub(), by_token);
  ASSERT_TRUE(token_stopped.status.ok());
  const size_t at = std::find(free_run.token_ids.begin(), free_run.token_ids.end(),
                              free_run.token_ids[5]) - free_run.token_ids.begin();
  EXPECT_EQ(token_stopped.token_ids.size(), at + 1);
  EXPECT_EQ(token_stopped.result.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(token_stopped.text, model_->tokenizer()->DecodeLossy(std::vector<int32_t>(
                                    free_run.token_ids.begin(), free_run.token_ids.begin() + at)));
}

TEST_F(GenerateTest, SeededSamplingIsReproducibleAndLogprobsAreReturned) {
  v1::GenerateRequest request;
  request.set_prompt_text("Random text:");
  request.set_max_new_tokens(24);
  request.set_ignore_eos(true);
  request.set_return_logprobs(true);
  request.mutable_sampling()->set_temperature(0.9f);
  request.mutable_sampling()->set_top_k(40);
  request.mutable_sampling()->set_top_p(0.95f);
  request.mutable_sampling()->set_repetition_penalty(1.2f);
  request.mutable_sampling()->set_seed(1234);
  const GenerateOutput a = Generate(server_->stub(), request);
  const GenerateOutput b = Generate(server_->stub(), request);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.token_ids, b.token_ids);
  ASSERT_EQ(a.logprobs.size(), a.token_ids.size());
  for (float logprob : a.logprobs) {
    EXPECT_LE(logprob, 0.0f);
    EXPECT_TRUE(std::isfinite(logprob));
  }
  request.mutable_sampling()->set_seed(99);
  EXPECT_NE(Generate(server_->stub(), request).token_ids, a.token_ids);
}

TEST_F(GenerateTest, ZeroNewTokensPrimesASession) {
  v1::GenerateRequest request;
  request.set_prompt_text("Context only.");
  request.set_max_new_tokens(0);
  request.set_keep_session(true);
  const GenerateOutput output = Generate(server_->stub(), request);
  ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  EXPECT_TRUE(output.token_ids.empty());
  EXPECT_EQ(output.result.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(output.result.session().tokens_seen(), 13u);
  // Nothing to continue from: an empty prompt is refused, naming the field.
  v1::GenerateRequest empty;
  empty.set_session_id(output.session_id);
  const GenerateOutput refused = Generate(server_->stub(), empty);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused.status.error_message().rfind("prompt_text:", 0), 0u);
}

TEST_F(GenerateTest, ScoreEqualsTokenByTokenNll) {
  // Long enough for several steps through a 2 + 30 window (progress comes once per step).
  std::string text;
  for (int i = 0; i < 3; ++i) {
    text += "Perplexity is the exponential of the mean negative log-likelihood of each next token. ";
  }
  const std::vector<int32_t> ids = Encode(*model_, text);
  v1::ScoreRequest request;
  request.set_text(text);
  request.set_return_token_nll(true);
  request.set_progress_interval_tokens(16);
  request.mutable_cache_policy()->mutable_streaming()->set_sink_tokens(2);
  request.mutable_cache_policy()->mutable_streaming()->set_window_tokens(30);
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::ScoreResponse>> reader =
      server_->stub().Score(&context, request);
  v1::ScoreResponse response;
  std::vector<double> token_nll;
  v1::ScoreResult result;
  int progress = 0;
  while (reader->Read(&response)) {
    token_nll.insert(token_nll.end(), response.token_nll().begin(), response.token_nll().end());
    if (response.has_result()) {
      result = response.result();
    } else {
      ++progress;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GE(progress, 2);

  // The StreamingLLM protocol, one token at a time.
  CachePolicy policy;
  policy.sink_tokens = 2;
  policy.window_tokens = 30;
  std::unique_ptr<KvCache> cache = *model_->backend().NewCache(policy);
  std::vector<float> logits(model_->config().vocab_size);
  ASSERT_EQ(token_nll.size(), ids.size() - 1);
  double sum = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    ASSERT_TRUE(model_->backend().Forward({&ids[i], 1}, *cache, logits, false).ok());
    const double nll = TokenNll(logits, ids[i + 1]);
    EXPECT_NEAR(token_nll[i], nll, 1e-4) << i;
    sum += nll;
  }
  EXPECT_EQ(result.tokens(), ids.size());
  EXPECT_EQ(result.scored_tokens(), ids.size() - 1);
  EXPECT_NEAR(result.nll_mean(), sum / (ids.size() - 1), 1e-5);
  EXPECT_NEAR(result.perplexity(), std::exp(sum / (ids.size() - 1)), 1e-3);
  EXPECT_EQ(result.evicted_tokens(), ids.size() - 1 - 32);
  EXPECT_EQ(result.cache_description(), "streaming (sink 2, window 30)");
}

}  // namespace
}  // namespace sinkserve::testing
