// Bearer-token authentication of the sinkserve.v1 RPCs (`--auth-token`, `--auth-token-file`).
//
// A client sends the metadata `authorization: Bearer <token>`; without it, or with another
// token, the RPC ends UNAUTHENTICATED before its request is parsed. grpc.health.v1 and server
// reflection are not guarded: probes (Kubernetes, load balancers) carry no secrets, and those
// services reveal only the serving status and the public schema.
#pragma once

#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sinkserve::server {

class BearerToken {
 public:
  // An empty token lets every call through (authentication off).
  explicit BearerToken(std::string token = "") : token_(std::move(token)) {}

  // OK, or UNAUTHENTICATED saying what was missing or wrong (never echoing a token).
  grpc::Status Check(const grpc::ServerContextBase& context) const;
  // The same for the value of an `authorization` header (HTTP), nullopt when absent.
  absl::Status CheckHeader(std::optional<std::string_view> authorization) const;

 private:
  std::string token_;
};

// The token in `path`: its first line, surrounding whitespace removed. Errors name the file;
// an empty token is refused (it would turn authentication off unnoticed).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace sinkserve::server
