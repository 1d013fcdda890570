// The JSON bodies of the OpenAI-compatible API, parsed into sinkserve.v1 requests so that the
// gRPC validator checks every value with the same limits (RequestValidator), and its messages
// renamed back to the OpenAI parameter names ("max_new_tokens: ..." → "max_tokens: ...").
//
// Parsing only checks JSON types and shapes; errors are INVALID_ARGUMENT whose message starts
// with the parameter's name ("temperature: must be a number, got a string").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "sinkserve/v1/sinkserve.pb.h"

namespace sinkserve::server::http {

inline constexpr int kMaxTopLogprobs = 20;         // OpenAI's limit on `logprobs`
inline constexpr int kMaxChoices = 64;             // n × prompts of one request at most
inline constexpr uint32_t kDefaultMaxTokens = 16;  // OpenAI's default `max_tokens`

// POST /v1/completions.
struct CompletionRequest {
  std::string model;  // "" when absent
  // One GenerateRequest per prompt (prompt, sampling, max_new_tokens, stop, session fields);
  // choice c of prompt p runs prompts[p] with seed + c when a seed is given.
  std::vector<v1::GenerateRequest> prompts;
  int n = 1;
  int logprobs = -1;  // -1 = none; else the number of top tokens per position (0..20)
  bool echo = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body);

// POST /v1/chat/completions: the fields it shares with completions (`logprobs` true/false with
// `top_logprobs`, `max_completion_tokens` as max_tokens, no default max_tokens), and the
// messages the chat template renders into the prompt.
struct ChatRequest {
  // One prompt, which holds every field but the prompt text.
  CompletionRequest completion;
  // An array of objects whose `role` is a string and `content` a string or null (a list of
  // text parts joined by newlines); other members as sent, in the body's order.
  nlohmann::ordered_json messages;
};
absl::StatusOr<ChatRequest> ParseChatRequest(std::string_view body);

// POST /tokenize: {"prompt": "text"} (vLLM; llama-server's "content" is accepted too).
struct TokenizeRequest {
  std::string model;
  std::string text;
};
absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(std::string_view body);

// POST /detokenize: {"tokens": [ids]}.
struct DetokenizeRequest {
  std::string model;
  std::vector<uint32_t> tokens;
};
absl::StatusOr<DetokenizeRequest> ParseDetokenizeRequest(std::string_view body);

// The OpenAI parameter a sinkserve.v1 field path came from ("sampling.top_p" → "top_p",
// "prompt_token_ids[3]" → "prompt", "stop_strings[0]" → "stop").
std::string OpenAiParam(std::string_view proto_field);
// A validator error with its field renamed to the OpenAI parameter (other statuses unchanged).
absl::Status ToOpenAiNames(const absl::Status& status);

}  // namespace sinkserve::server::http
