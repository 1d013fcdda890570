// A client connection to a sinkserve server: the channel, the stub, and the model it serves.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/client_security/client_security.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"

namespace sinkserve::bench {

// The metadata key nginx and the ingress hash for session affinity; the server takes it as the
// session id (see CreateSession in the proto).
inline constexpr char kSessionIdMetadata[] = "x-session-id";

struct Connection {
  std::string address;  // host:port
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Sinkserve::Stub> stub;
  v1::ModelInfo model;
  std::string authorization;  // "Bearer <token>", or "" without a token

  // Adds this connection's metadata to a call: the bearer token, and x-session-id when the
  // call belongs to a session.
  void Prepare(grpc::ClientContext& context, const std::string& session_id = "") const;
};

// Connects to `address` (plaintext or TLS, with or without a token: `security`) and asks
// GetModelInfo, retrying UNAVAILABLE (not listening yet, model loading) until `wait` has
// passed. UNAVAILABLE after that names the address and the cause.
absl::StatusOr<Connection> Connect(const std::string& address, const ClientSecurity& security = {},
                                   std::chrono::milliseconds wait = std::chrono::seconds(5));

// A gRPC status as an absl::Status (the codes are the same), prefixed by `context`.
absl::Status FromGrpc(const grpc::Status& status, const std::string& context);

}  // namespace sinkserve::bench
