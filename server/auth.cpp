#include "server/auth.h"

#include <fstream>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace sinkserve::server {
namespace {

// Compares in time that depends only on the lengths, so that response timing does not reveal
// how many leading characters of a guess were right.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

grpc::Status BearerToken::Check(const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find("authorization");
  const absl::Status status =
      CheckHeader(header == metadata.end()
                      ? std::nullopt
                      : std::optional<std::string_view>(std::string_view(header->second.data(),
                                                                         header->second.size())));
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(status.message()));
}

absl::Status BearerToken::CheckHeader(std::optional<std::string_view> authorization) const {
  if (token_.empty()) return absl::OkStatus();
  if (!authorization) {
    return absl::UnauthenticatedError(
        "authorization: missing; send the header 'authorization: Bearer <token>'");
  }
  constexpr std::string_view kScheme = "Bearer ";
  if (!authorization->starts_with(kScheme) ||
      !ConstantTimeEquals(authorization->substr(kScheme.size()), token_)) {
    return absl::UnauthenticatedError("authorization: not the server's bearer token");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot read the auth token file"));
  std::string line;
  std::getline(file, line);
  std::string token(absl::StripAsciiWhitespace(line));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the auth token file is empty"));
  }
  return token;
}

}  // namespace sinkserve::server
