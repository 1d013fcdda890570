#include "server/auth.h"

#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
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
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find("authorization");
  if (header == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization: missing; send the metadata 'authorization: Bearer <token>'");
  }
  // Which of several would count is a guess a proxy and the server could make differently.
  if (const size_t count = metadata.count("authorization"); count > 1) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("authorization: sent ", count, " times; send exactly one"));
  }
  // RFC 7235: the scheme is case-insensitive, and one or more spaces follow it.
  absl::string_view value(header->second.data(), header->second.size());
  constexpr absl::string_view kScheme = "bearer";
  const bool bearer = value.size() > kScheme.size() &&
                      absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme) &&
                      value[kScheme.size()] == ' ';
  if (bearer) value = absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
  if (!bearer || !ConstantTimeEquals(std::string_view(value.data(), value.size()), token_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization: not the server's bearer token");
  }
  return grpc::Status::OK;
}

}  // namespace sinkserve::server
