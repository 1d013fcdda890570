// POST /v1/completions: OpenAI's Completions API on the scheduler.
//
//   - Each prompt's choices (n) run as Generate requests at once; with a seed, choice c samples
//     with seed + c, so that n choices differ and repeat.
//   - `logprobs: N` returns each token's log-probability and the N most likely tokens (plus the
//     chosen one), computed by the engine before sampling changed the logits.
//   - `echo: true` puts the prompt in front of the text; with `logprobs`, the prompt tokens'
//     log-probabilities come from the Score path under the request's cache policy (the first
//     token has none: null). `max_tokens: 0` then generates nothing: what lm-evaluation-harness
//     asks for log-likelihoods.
//   - A client that goes away cancels its requests within a step, whatever they wait for
//     (admission, scoring the echo, generation): the handler watches the connection while it
//     waits (client_connection.h), and a streamed response's failed write says so too.
//   - `stream: true` answers server-sent events in OpenAI's chunk format ending `data: [DONE]`.
//     The response starts once every choice was admitted, so a refusal (429, 404 for an
//     unknown session) is still an HTTP status; an error after that is an `error` event before
//     [DONE].
//
// /v1/chat/completions (chat_completions.h) runs the same way: it renders its messages into one
// prompt and answers in its own JSON shapes (a ResponseFormat).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/http/openai_request.h"
#include "server/metrics.h"
#include "server/service.h"

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace sinkserve::server::http {

struct CompletionContext {
  const ServingEngine& engine;
  Metrics* metrics;
  const std::string& model_id;
  std::string request_id;
};

// POST /v1/completions.
void HandleCompletions(const CompletionContext& context, const httplib::Request& request,
                       httplib::Response& response);

// A choice's `logprobs`, built token by token; Take() hands out what was added since the last
// Take (a stream's chunk).
class LogprobsBuilder {
 public:
  virtual ~LogprobsBuilder() = default;
  // `logprob` unset: the prompt's first token, which has none.
  virtual void Add(int32_t token, std::optional<double> logprob,
                   const std::vector<TokenLogprob>& top) = 0;
  virtual nlohmann::json Take() = 0;
};

// The JSON shapes of an endpoint's responses and stream chunks.
class ResponseFormat {
 public:
  enum class Part { kWhole, kFirstChunk, kChunk };  // a response's choice, or a chunk's

  virtual ~ResponseFormat() = default;
  virtual const char* endpoint() const = 0;      // "/v1/completions"
  virtual const char* id_prefix() const = 0;     // "cmpl-"
  virtual const char* prompt_param() const = 0;  // what the prompt came from: "prompt"
  virtual const char* object(Part part) const = 0;
  virtual std::unique_ptr<LogprobsBuilder> NewLogprobs(const Model& model) const = 0;
  // A choice: its text (a chunk's: what is new), logprobs (null when not asked for) and
  // finish_reason (null while it runs).
  virtual nlohmann::json Choice(size_t index, std::string text, nlohmann::json logprobs,
                                nlohmann::json finish_reason, Part part) const = 0;
};

// A token's text in logprobs: its bytes, or "token_id:N" without a tokenizer.
std::string TokenString(const Model& model, int32_t id);

// Runs a parsed request and answers it (JSON, or server-sent events with stream) in `format`,
// watching `http_request`'s connection: a client that goes away cancels it.
void ServeCompletion(const CompletionContext& context, const ResponseFormat& format,
                     CompletionRequest request, const httplib::Request& http_request,
                     httplib::Response& response);

}  // namespace sinkserve::server::http
