#include "server/session_metadata.h"

#include "absl/strings/str_cat.h"

namespace sinkserve::server {

absl::StatusOr<std::string> CallSessionId(const grpc::ServerContextBase& context,
                                          const std::string& field) {
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find(kSessionIdMetadata);
  if (header == metadata.end()) return field;
  std::string value(header->second.data(), header->second.size());
  if (field.empty() || field == value) return value;
  return absl::InvalidArgumentError(absl::StrCat("session_id: \"", field,
                                                 "\" differs from the x-session-id metadata \"",
                                                 value, "\" (send one, or both alike)"));
}

}  // namespace sinkserve::server
