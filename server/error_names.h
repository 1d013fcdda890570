// Engine errors in an API's words (engine/serving/error_subject.h): the engine names the
// request's prompt "prompt" and its limits by their option names ("max_queue"); a client hears
// the field it sent (gRPC's `prompt_token_ids`, OpenAI's `prompt`) and the server flag behind a
// limit ("the server's --max-queue").
#pragma once

#include <string>

#include "absl/status/status.h"

namespace sinkserve::server {

// What an API calls the engine's request fields; an empty name keeps the engine's word.
struct FieldNames {
  std::string prompt;        // a Generate's prompt tokens
  std::string score_tokens;  // a Score's tokens
};

// `status` with its subject's engine word replaced by the API's name (the first occurrence);
// the code, and statuses without a subject, unchanged.
absl::Status InApiWords(const absl::Status& status, const FieldNames& names);

}  // namespace sinkserve::server
