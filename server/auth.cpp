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
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find("authorization");
  const absl::Status status = CheckHeader(
      header == metadata.end()
          ? std::nullopt
          : std::optional<std::string_view>(
                std::string_view(header->second.data(), header->second.size())),
      metadata.count("authorization"));
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(status.message()));
}

absl::Status BearerToken::CheckHeader(std::optional<std::string_view> authorization,
                                      size_t count) const {
  if (token_.empty()) return absl::OkStatus();
  if (!authorization) {
    return absl::UnauthenticatedError(
        "authorization: missing; send the header 'authorization: Bearer <token>'");
  }
  // Which of several would count is a guess a proxy and the server could make differently.
  if (count > 1) {
    return absl::UnauthenticatedError(
        absl::StrCat("authorization: sent ", count, " times; send exactly one"));
  }
  // RFC 7235: the scheme is case-insensitive, and one or more spaces follow it.
  absl::string_view value(authorization->data(), authorization->size());
  constexpr absl::string_view kScheme = "bearer";
  const bool bearer = value.size() > kScheme.size() &&
                      absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme) &&
                      value[kScheme.size()] == ' ';
  if (bearer) value = absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
  if (!bearer || !ConstantTimeEquals(std::string_view(value.data(), value.size()), token_)) {
    return absl::UnauthenticatedError("authorization: not the server's bearer token");
  }
  return absl::OkStatus();
}

}  // namespace sinkserve::server
