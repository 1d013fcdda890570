// POST /v1/chat/completions: OpenAI's Chat Completions API on the /v1/completions machinery
// (completions.h). The messages are rendered by the model's chat template (chat_template.h)
// with add_generation_prompt true into one prompt, which runs as a completion does (n, seed,
// stop, logprobs, stream, session_id and the other extensions alike); the answer is in the chat
// shapes: `chat.completion` with each choice's `message`, or `chat.completion.chunk` events
// whose `delta` carries the role in a choice's first chunk, then its content. Without a
// template every request is 400 naming `messages`.
#pragma once

#include "server/http/chat_template.h"
#include "server/http/completions.h"

namespace sinkserve::server::http {

// `chat_template` nullptr: the model has none.
void HandleChatCompletions(const CompletionContext& context, const ChatTemplate* chat_template,
                           const httplib::Request& request, httplib::Response& response);

}  // namespace sinkserve::server::http
