#include "engine/serving/error_subject.h"

#include "absl/strings/cord.h"

namespace sinkserve {
namespace {

constexpr char kPayloadUrl[] = "type.sinkserve.dev/sinkserve.ErrorSubject";

}  // namespace

const char* EngineWord(ErrorSubject subject) {
  switch (subject) {
    case ErrorSubject::kErrorSubjectPrompt:
      return "prompt";
    case ErrorSubject::kErrorSubjectScoreTokens:
      return "tokens";
    case ErrorSubject::kErrorSubjectQueueLimit:
      return "max_queue";
    case ErrorSubject::kErrorSubjectSessionLimit:
      return "max_sessions";
    case ErrorSubject::kErrorSubjectCacheLimit:
      return "max_cache_bytes";
    case ErrorSubject::kErrorSubjectSessionTtl:
      return "session_ttl";
  }
  return "unknown";
}

absl::Status SubjectError(absl::StatusCode code, ErrorSubject subject, std::string message) {
  absl::Status status(code, message);
  status.SetPayload(kPayloadUrl, absl::Cord(std::string(1, static_cast<char>(subject))));
  return status;
}

std::optional<ErrorSubject> SubjectOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kPayloadUrl);
  if (!payload || payload->size() != 1) return std::nullopt;
  const auto value = static_cast<uint8_t>(std::string(*payload)[0]);
  if (value > static_cast<uint8_t>(ErrorSubject::kErrorSubjectSessionTtl)) return std::nullopt;
  return static_cast<ErrorSubject>(value);
}

}  // namespace sinkserve
