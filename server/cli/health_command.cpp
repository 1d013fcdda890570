// sinkserve health: asks a server's grpc.health.v1 whether it is SERVING. The container's
// HEALTHCHECK (the image has no grpc_health_probe); Kubernetes uses its native gRPC probe.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "common/client_security/client_security.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/cli/commands.h"
#include "common/cli/command.h"
#include "common/cli/flags.h"

namespace sinkserve::cli {

namespace {

// The environment's default for a flag (the image's HEALTHCHECK has a fixed command line).
std::string FromEnvironment(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

}  // namespace

int RunHealth(int argc, char** argv) {
  std::string address = "127.0.0.1:50051", service;
  double timeout_s = 3;
  ClientSecurity security;
  security.tls_ca = FromEnvironment("SINKSERVE_TLS_CA");
  security.tls_server_name = FromEnvironment("SINKSERVE_TLS_SERVER_NAME");
  Flags flags("health",
              "Checks grpc.health.v1 of a running server: prints its status, exits 0 when\n"
              "SERVING, 1 otherwise (NOT_SERVING while loading or draining, unreachable).\n"
              "A server with --tls-cert needs --tls-ca (default $SINKSERVE_TLS_CA) and, when its\n"
              "certificate does not name the address's host, --tls-server-name (default\n"
              "$SINKSERVE_TLS_SERVER_NAME): the image's HEALTHCHECK reads those variables.");
  flags.Add("address", &address, "the server's gRPC address, host:port");
  flags.Add("service", &service, "service to check; empty = the whole server");
  flags.Add("timeout-s", &timeout_s, "give up after this many seconds");
  security.AddTo(flags, /*token=*/false);  // health needs no token
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;

  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = security.Channel(address);
  if (!channel.ok()) return Fail(channel.status());
  auto stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", address.c_str(), status.error_message().c_str());
    return kExitError;
  }
  std::printf("%s\n",
              grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitError;
}

}  // namespace sinkserve::cli
