#include "server/error_names.h"

#include <optional>

#include "engine/serving/error_subject.h"

namespace sinkserve::server {
namespace {

// The API's name of `subject`: a field of the request, or the flag that sets a limit.
std::string ApiName(ErrorSubject subject, const FieldNames& names) {
  switch (subject) {
    case ErrorSubject::kErrorSubjectPrompt:
      return names.prompt;
    case ErrorSubject::kErrorSubjectScoreTokens:
      return names.score_tokens;
    case ErrorSubject::kErrorSubjectQueueLimit:
      return "the server's --max-queue";
    case ErrorSubject::kErrorSubjectSessionLimit:
      return "the server's --max-sessions";
    case ErrorSubject::kErrorSubjectCacheLimit:
      return "the server's --max-cache-bytes";
    case ErrorSubject::kErrorSubjectSessionTtl:
      return "the server's --session-ttl-s";
  }
  return "";
}

}  // namespace

absl::Status InApiWords(const absl::Status& status, const FieldNames& names) {
  const std::optional<ErrorSubject> subject = SubjectOf(status);
  if (!subject) return status;
  const std::string name = ApiName(*subject, names);
  std::string message(status.message());
  const std::string word = EngineWord(*subject);
  const size_t at = message.find(word);
  if (name.empty() || at == std::string::npos) return status;
  return absl::Status(status.code(), message.replace(at, word.size(), name));
}

}  // namespace sinkserve::server
