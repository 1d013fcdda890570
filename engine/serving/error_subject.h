// What an engine error is about, carried in the absl::Status as a payload, so that a server can
// say it in its API's words: the field the client sent (gRPC's `prompt_token_ids`, OpenAI's
// `prompt`) or the flag that set a limit (`--max-queue`).
//
// The engine's message names the subject with its engine word (EngineWord below): a field
// subject leads the message ("prompt: 300 tokens do not fit ..."), a limit subject appears in it
// ("... (max_queue); retry later"). A server replaces that word's first occurrence.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace sinkserve {

enum class ErrorSubject : uint8_t {
  kErrorSubjectPrompt,        // a Generate's prompt tokens: "prompt"
  kErrorSubjectScoreTokens,   // a Score's tokens: "tokens"
  kErrorSubjectQueueLimit,    // SchedulerOptions::max_queue: "max_queue"
  kErrorSubjectSessionLimit,  // SessionTable::Limits::max_sessions: "max_sessions"
  kErrorSubjectCacheLimit,    // SessionTable::Limits::max_cache_bytes: "max_cache_bytes"
  kErrorSubjectSessionTtl,    // SessionTable::Limits::ttl: "session_ttl"
};

// The word an engine message uses for `subject`.
const char* EngineWord(ErrorSubject subject);

// A status of `code` with `message` (which holds EngineWord(subject)) and `subject` attached.
absl::Status SubjectError(absl::StatusCode code, ErrorSubject subject, std::string message);

// The subject attached to `status`, if any.
std::optional<ErrorSubject> SubjectOf(const absl::Status& status);

}  // namespace sinkserve
