#include "server/auth.h"

#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"

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
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find("authorization");
  if (header == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization: missing; send the metadata 'authorization: Bearer <token>'");
  }
  const std::string_view value(header->second.data(), header->second.size());
  constexpr std::string_view kScheme = "Bearer ";
  if (!value.starts_with(kScheme) ||
      !ConstantTimeEquals(value.substr(kScheme.size()), token_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization: not the server's bearer token");
  }
  return grpc::Status::OK;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot read the auth token file (", text.status().message(), ")"));
  }
  const std::string_view first_line = std::string_view(*text).substr(0, text->find('\n'));
  std::string token(absl::StripAsciiWhitespace({first_line.data(), first_line.size()}));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the auth token file is empty"));
  }
  return token;
}

}  // namespace sinkserve::server
