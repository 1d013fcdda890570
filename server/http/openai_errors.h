// Engine errors (absl::Status) to the OpenAI API's error responses: the HTTP status that
// matches the gRPC code, and the body {"error": {"message", "type", "param", "code"}}.
//   INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION 400 · UNAUTHENTICATED 401 ·
//   PERMISSION_DENIED 403 · NOT_FOUND 404 · ABORTED (a busy session) 409 ·
//   RESOURCE_EXHAUSTED 429 (with Retry-After) · CANCELLED 499 · UNAVAILABLE 503 ·
//   DEADLINE_EXCEEDED 504 · anything else 500.
// `param` is the parameter the message starts with ("max_tokens: ..."), `code` the gRPC code's
// name in lower case ("invalid_argument"), so that an HTTP error reads like its gRPC twin.
// An engine error names the OpenAI parameter and the server's flags (server/error_names.h).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace sinkserve::server::http {

int HttpStatus(absl::StatusCode code);
// The JSON error body of `status` (not OK), answered with `http_status`.
std::string ErrorBody(const absl::Status& status, int http_status);

}  // namespace sinkserve::server::http
