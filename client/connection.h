// A client connection to a sinkserve server: the channel, the stub, and the model it serves.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"

namespace sinkserve::bench {

struct Connection {
  std::string address;  // host:port
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Sinkserve::Stub> stub;
  v1::ModelInfo model;
};

// Connects to `address` and asks GetModelInfo, retrying UNAVAILABLE (not listening yet, model
// loading) until `wait` has passed. UNAVAILABLE after that names the address and the cause.
absl::StatusOr<Connection> Connect(const std::string& address,
                                   std::chrono::milliseconds wait = std::chrono::seconds(5));

// A gRPC status as an absl::Status (the codes are the same), prefixed by `context`.
absl::Status FromGrpc(const grpc::Status& status, const std::string& context);

}  // namespace sinkserve::bench
