// How a client reaches a deployed server: plaintext or TLS (--tls-ca verifies the server;
// --tls-cert/--tls-key present a client certificate) and a bearer token (--auth-token-file).
// Shared by sinkserve-bench and `sinkserve health`.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/cli/flags.h"

namespace sinkserve {

struct ClientSecurity {
  std::string tls_ca, tls_cert, tls_key;
  std::string tls_server_name;  // the name the server's certificate must carry; "" = the host
  std::string auth_token_file;

  // --tls-ca, --tls-cert, --tls-key, --tls-server-name; with `token`, also --auth-token-file.
  void AddTo(cli::Flags& flags, bool token = true);
  // A channel to `address`: TLS when --tls-ca is set, else plaintext. Errors name the flag or
  // the file.
  absl::StatusOr<std::shared_ptr<grpc::Channel>> Channel(const std::string& address) const;
  // "Bearer <token>" for the authorization metadata, or "" without --auth-token-file.
  absl::StatusOr<std::string> Authorization() const;
};

}  // namespace sinkserve
