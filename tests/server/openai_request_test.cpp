// The OpenAI API's JSON bodies (server/http/openai_request.h) against what OpenAI's API
// reference says each parameter accepts: every shape of `prompt`, `stop` and sinkserve's
// `cache_policy`, null meaning unset, wrong types and unsupported parameters refused naming the
// parameter, and the gRPC validator's messages renamed to the OpenAI names.
#include "server/http/openai_request.h"

#include <gtest/gtest.h>

#include <string>

namespace sinkserve::server::http {
namespace {

CompletionRequest Parse(const std::string& body) {
  absl::StatusOr<CompletionRequest> request = ParseCompletionRequest(body);
  EXPECT_TRUE(request.ok()) << body << ": " << request.status();
  return request.ok() ? *request : CompletionRequest{};
}

// The refusal's parameter (the message's prefix), or "" when the body was accepted.
std::string Refused(const std::string& body) {
  absl::StatusOr<CompletionRequest> request = ParseCompletionRequest(body);
  if (request.ok()) return "";
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument) << body;
  const std::string message(request.status().message());
  return message.substr(0, message.find(':'));
}

TEST(OpenAiRequest, PromptShapes) {
  EXPECT_EQ(Parse(R"({"prompt": "Hi"})").prompts.at(0).prompt_text(), "Hi");
  const CompletionRequest ids = Parse(R"({"prompt": [72, 105]})");
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_EQ(ids.prompts[0].prompt_token_ids_size(), 2);
  const CompletionRequest batch = Parse(R"({"prompt": ["a", [1, 2, 3], ""]})");
  ASSERT_EQ(batch.prompts.size(), 3u);
  EXPECT_EQ(batch.prompts[0].prompt_text(), "a");
  EXPECT_EQ(batch.prompts[1].prompt_token_ids_size(), 3);
  EXPECT_EQ(batch.prompts[2].prompt_text(), "");
  EXPECT_EQ(Refused(R"({})"), "prompt");
  EXPECT_EQ(Refused(R"({"prompt": []})"), "prompt");
  EXPECT_EQ(Refused(R"({"prompt": [1, -2]})"), "prompt[1]");
  EXPECT_EQ(Refused(R"({"prompt": [1, 2.5]})"), "prompt[1]");
  EXPECT_EQ(Refused(R"({"prompt": ["a", 3]})"), "prompt[1]");
  EXPECT_EQ(Refused(R"({"prompt": {"text": "a"}})"), "prompt");
}

TEST(OpenAiRequest, ParametersReachEveryPrompt) {
  const CompletionRequest request = Parse(R"({
      "model": "m", "prompt": ["a", "b"], "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
      "top_k": -1, "seed": 3, "stop": ["x", "y"], "n": 2, "logprobs": 5, "echo": true,
      "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true,
      "repetition_penalty": 1.2, "cache_policy": {"sink": 4, "window": 64}, "user": "ignored",
      "presence_penalty": 0, "best_of": 1, "logit_bias": {}})");
  EXPECT_EQ(request.model, "m");
  EXPECT_EQ(request.n, 2);
  EXPECT_EQ(request.logprobs, 5);
  EXPECT_TRUE(request.echo && request.stream && request.include_usage);
  ASSERT_EQ(request.prompts.size(), 2u);
  for (const v1::GenerateRequest& prompt : request.prompts) {
    EXPECT_EQ(prompt.max_new_tokens(), 7u);
    EXPECT_FLOAT_EQ(prompt.sampling().temperature(), 0.5f);
    EXPECT_FLOAT_EQ(prompt.sampling().top_p(), 0.9f);
    EXPECT_EQ(prompt.sampling().top_k(), 0u);  // -1 = off
    EXPECT_EQ(prompt.sampling().seed(), 3u);
    EXPECT_FLOAT_EQ(prompt.sampling().repetition_penalty(), 1.2f);
    EXPECT_EQ(prompt.stop_strings_size(), 2);
    EXPECT_TRUE(prompt.ignore_eos() && prompt.return_logprobs());
    EXPECT_EQ(prompt.cache_policy().streaming().window_tokens(), 64u);
  }
  EXPECT_EQ(request.prompts[1].prompt_text(), "b");
}

TEST(OpenAiRequest, DefaultsAndNulls) {
  const CompletionRequest request =
      Parse(R"({"prompt": "a", "max_tokens": null, "temperature": null, "logprobs": null,
                "stop": null, "seed": null})");
  const v1::GenerateRequest& prompt = request.prompts.at(0);
  EXPECT_EQ(prompt.max_new_tokens(), kDefaultMaxTokens);
  EXPECT_FALSE(prompt.sampling().has_temperature());
  EXPECT_FALSE(prompt.sampling().has_seed());
  EXPECT_EQ(request.logprobs, -1);
  EXPECT_FALSE(prompt.return_logprobs());
  EXPECT_EQ(request.n, 1);
  EXPECT_EQ(Parse(R"({"prompt": "a", "stop": "x"})").prompts[0].stop_strings(0), "x");
  EXPECT_TRUE(
      Parse(R"({"prompt": "a", "cache_policy": "dense"})").prompts[0].cache_policy().has_dense());
  EXPECT_EQ(Parse(R"({"prompt": "a", "cache_policy": {"dense": 512}})")
                .prompts[0]
                .cache_policy()
                .dense()
                .capacity_tokens(),
            512u);
}

TEST(OpenAiRequest, RefusalsNameTheParameter) {
  EXPECT_EQ(Refused("{not json"), "body");
  EXPECT_EQ(Refused("[1, 2]"), "body");
  EXPECT_EQ(Refused(std::string(100, '[') + std::string(100, ']')), "body");
  EXPECT_EQ(Refused(R"({"prompt": "a", "max_tokens": "7"})"), "max_tokens");
  EXPECT_EQ(Refused(R"({"prompt": "a", "max_tokens": -1})"), "max_tokens");
  EXPECT_EQ(Refused(R"({"prompt": "a", "temperature": "hot"})"), "temperature");
  EXPECT_EQ(Refused(R"({"prompt": "a", "n": 0})"), "n");
  EXPECT_EQ(Refused(R"({"prompt": ["a", "b"], "n": 40})"), "n");
  EXPECT_EQ(Refused(R"({"prompt": "a", "logprobs": 21})"), "logprobs");
  EXPECT_EQ(Refused(R"({"prompt": "a", "logprobs": true})"), "logprobs");
  EXPECT_EQ(Refused(R"({"prompt": "a", "stop": [1]})"), "stop[0]");
  EXPECT_EQ(Refused(R"({"prompt": "a", "echo": "yes"})"), "echo");
  EXPECT_EQ(Refused(R"({"prompt": "a", "stream_options": {"include_usage": true}})"),
            "stream_options");
  EXPECT_EQ(Refused(R"({"prompt": "a", "presence_penalty": 0.5})"), "presence_penalty");
  EXPECT_EQ(Refused(R"({"prompt": "a", "best_of": 3})"), "best_of");
  EXPECT_EQ(Refused(R"({"prompt": "a", "logit_bias": {"50256": -100}})"), "logit_bias");
  EXPECT_EQ(Refused(R"({"prompt": "a", "cache_policy": "streaming"})"), "cache_policy");
  EXPECT_EQ(Refused(R"({"prompt": "a", "cache_policy": {"sink": 4}})"), "cache_policy");
  EXPECT_EQ(Refused(R"({"prompt": ["a", "b"], "session_id": "s"})"), "session_id");
  EXPECT_EQ(Refused(R"({"prompt": "a", "n": 2, "keep_session": true})"), "keep_session");
  EXPECT_EQ(Refused(R"({"prompt": "a", "model": 5})"), "model");
}

TEST(OpenAiRequest, ValidatorMessagesGetTheOpenAiNames) {
  auto renamed = [](const std::string& message) {
    return std::string(ToOpenAiNames(absl::InvalidArgumentError(message)).message());
  };
  EXPECT_EQ(renamed("max_new_tokens: must be at most 4096"), "max_tokens: must be at most 4096");
  EXPECT_EQ(renamed("sampling.top_p: must be in (0, 1]"), "top_p: must be in (0, 1]");
  EXPECT_EQ(renamed("prompt_token_ids[3]: 70000 is outside"), "prompt[3]: 70000 is outside");
  EXPECT_EQ(renamed("prompt_text: invalid UTF-8"), "prompt: invalid UTF-8");
  EXPECT_EQ(renamed("stop_strings[1]: must not be empty"), "stop[1]: must not be empty");
  EXPECT_EQ(renamed("cache_policy.streaming.window_tokens: must be at least 1"),
            "cache_policy: must be at least 1");
  EXPECT_EQ(renamed("session_id: required"), "session_id: required");
  EXPECT_EQ(renamed("no field here"), "no field here");
}

// The refusal's parameter for a chat body, or "" when accepted.
std::string ChatRefused(const std::string& body) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  if (request.ok()) return "";
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument) << body;
  const std::string message(request.status().message());
  return message.substr(0, message.find(':'));
}

TEST(OpenAiRequest, ChatBodies) {
  absl::StatusOr<ChatRequest> chat = ParseChatRequest(R"({
      "model": "m", "messages": [{"role": "system", "content": "s", "name": "n"},
                                 {"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]},
                                 {"role": "assistant", "content": null}],
      "max_completion_tokens": 9, "seed": 2, "n": 3, "logprobs": true, "top_logprobs": 4,
      "stream": true, "stream_options": {"include_usage": true}, "session_id": null})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->completion.model, "m");
  EXPECT_EQ(chat->completion.n, 3);
  EXPECT_EQ(chat->completion.logprobs, 4);
  EXPECT_TRUE(chat->completion.stream && chat->completion.include_usage);
  ASSERT_EQ(chat->completion.prompts.size(), 1u);
  EXPECT_EQ(chat->completion.prompts[0].max_new_tokens(), 9u);
  EXPECT_TRUE(chat->completion.prompts[0].return_logprobs());
  ASSERT_EQ(chat->messages.size(), 3u);
  EXPECT_EQ(chat->messages[0]["name"], "n");
  EXPECT_EQ(chat->messages[1]["content"], "a\nb");  // text parts joined
  EXPECT_TRUE(chat->messages[2]["content"].is_null());

  // No max_tokens: the server's default (unset), not completions' 16; logprobs off by default.
  chat = ParseChatRequest(R"({"messages": [{"role": "user", "content": "x"}]})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_FALSE(chat->completion.prompts[0].has_max_new_tokens());
  EXPECT_EQ(chat->completion.logprobs, -1);

  EXPECT_EQ(ChatRefused(R"({})"), "messages");
  EXPECT_EQ(ChatRefused(R"({"messages": []})"), "messages");
  EXPECT_EQ(ChatRefused(R"({"messages": {"role": "user"}})"), "messages");
  EXPECT_EQ(ChatRefused(R"({"messages": ["hi"]})"), "messages[0]");
  EXPECT_EQ(ChatRefused(R"({"messages": [{"role": "user", "content": "x"}, {"content": "y"}]})"),
            "messages[1].role");
  EXPECT_EQ(ChatRefused(R"({"messages": [{"role": 1, "content": "y"}]})"), "messages[0].role");
  EXPECT_EQ(ChatRefused(R"({"messages": [{"role": "user", "content": 5}]})"),
            "messages[0].content");
  EXPECT_EQ(ChatRefused(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
            "messages[0].content[0].type");
  EXPECT_EQ(ChatRefused(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})"),
            "messages[0].content[0].text");
  const std::string ok = R"("messages": [{"role": "user", "content": "x"}])";
  EXPECT_EQ(ChatRefused("{" + ok + R"(, "logprobs": 3})"), "logprobs");
  EXPECT_EQ(ChatRefused("{" + ok + R"(, "logprobs": true, "top_logprobs": 21})"), "top_logprobs");
  EXPECT_EQ(ChatRefused("{" + ok + R"(, "top_logprobs": 1})"), "top_logprobs");
  EXPECT_EQ(ChatRefused("{" + ok + R"(, "max_completion_tokens": -1})"), "max_completion_tokens");
  EXPECT_EQ(ChatRefused("{" + ok + R"(, "session_id": "s", "n": 2})"), "session_id");
  EXPECT_EQ(ChatRefused("{" + ok + R"(, "temperature": "hot"})"), "temperature");
  EXPECT_EQ(ChatRefused("{" + ok + R"(, "stream_options": {"include_usage": true}})"),
            "stream_options");
}

TEST(OpenAiRequest, TokenizeAndDetokenizeBodies) {
  EXPECT_EQ(ParseTokenizeRequest(R"({"prompt": "Hi"})")->text, "Hi");
  EXPECT_EQ(ParseTokenizeRequest(R"({"content": "Hi"})")->text, "Hi");  // llama-server
  EXPECT_FALSE(ParseTokenizeRequest(R"({"prompt": 1})").ok());
  EXPECT_EQ(ParseDetokenizeRequest(R"({"tokens": [1, 2]})")->tokens.size(), 2u);
  EXPECT_FALSE(ParseDetokenizeRequest(R"({"tokens": "12"})").ok());
  EXPECT_FALSE(ParseDetokenizeRequest(R"({})").ok());
}

}  // namespace
}  // namespace sinkserve::server::http
