// Bearer-token authentication of the sinkserve.v1 RPCs (`--auth-token`, `--auth-token-file`:
// cli::ReadTokenFile).
//
// A client sends the metadata `authorization: Bearer <token>` (the scheme in any case, as RFC
// 7235 says); without it, with another token, or with more than one `authorization`, the RPC
// ends UNAUTHENTICATED before its request is parsed. grpc.health.v1 and server
// reflection are not guarded: probes (Kubernetes, load balancers) carry no secrets, and those
// services reveal only the serving status and the public schema.
#pragma once

#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace sinkserve::server {

class BearerToken {
 public:
  // An empty token lets every call through (authentication off).
  explicit BearerToken(std::string token = "") : token_(std::move(token)) {}

  // OK, or UNAUTHENTICATED saying what was missing or wrong (never echoing a token).
  grpc::Status Check(const grpc::ServerContextBase& context) const;
  // The same for the value of an `authorization` header (HTTP), nullopt when absent; `count`
  // is how many such headers came (more than one is refused).
  absl::Status CheckHeader(std::optional<std::string_view> authorization, size_t count = 1) const;

 private:
  std::string token_;
};

}  // namespace sinkserve::server
