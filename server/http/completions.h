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
#pragma once

#include <string>

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

void HandleCompletions(const CompletionContext& context, const httplib::Request& request,
                       httplib::Response& response);

}  // namespace sinkserve::server::http
