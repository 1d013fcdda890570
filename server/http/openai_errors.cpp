#include "server/http/openai_errors.h"

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"
#include "server/error_names.h"

namespace sinkserve::server::http {
namespace {

// OpenAI's error types.
const char* ErrorType(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable_error";
    default:
      return http_status < 500 ? "invalid_request_error" : "server_error";
  }
}

}  // namespace

int HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorBody(const absl::Status& status, int http_status) {
  const std::string message(InApiWords(status, FieldNames{"prompt", "prompt"}).message());
  nlohmann::json param = nullptr;
  const size_t colon = message.find(": ");
  if (colon != std::string::npos && message.substr(0, colon).find(' ') == std::string::npos) {
    param = std::string(message.substr(0, colon));
  }
  nlohmann::json body = {
      {"error",
       {{"message", std::string(message)},
        {"type", ErrorType(http_status)},
        {"param", param},
        {"code", absl::AsciiStrToLower(absl::StatusCodeToString(status.code()))}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace sinkserve::server::http
