// sinkserve health: asks a server's grpc.health.v1 whether it is SERVING. The container's
// HEALTHCHECK (the image has no grpc_health_probe); Kubernetes uses its native gRPC probe.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>

#include "grpc/health/v1/health.grpc.pb.h"
#include "server/cli/commands.h"
#include "common/cli/command.h"
#include "common/cli/flags.h"

namespace sinkserve::cli {

int RunHealth(int argc, char** argv) {
  std::string address = "127.0.0.1:50051", service;
  double timeout_s = 3;
  Flags flags("health",
              "Checks grpc.health.v1 of a running server: prints its status, exits 0 when\n"
              "SERVING, 1 otherwise (NOT_SERVING while loading or draining, unreachable).");
  flags.Add("address", &address, "the server's gRPC address, host:port");
  flags.Add("service", &service, "service to check; empty = the whole server");
  flags.Add("timeout-s", &timeout_s, "give up after this many seconds");
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;

  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
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
