#include "client/connection.h"

#include <thread>

#include "absl/strings/str_cat.h"

namespace sinkserve::bench {

absl::Status FromGrpc(const grpc::Status& status, const std::string& context) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(context, ": ", status.error_message()));
}

void Connection::Prepare(grpc::ClientContext& context, const std::string& session_id) const {
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  if (!session_id.empty()) context.AddMetadata(kSessionIdMetadata, session_id);
}

absl::StatusOr<Connection> Connect(const std::string& address, const ClientSecurity& security,
                                   std::chrono::milliseconds wait) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = security.Channel(address);
  if (!channel.ok()) return channel.status();
  absl::StatusOr<std::string> authorization = security.Authorization();
  if (!authorization.ok()) return authorization.status();
  Connection connection;
  connection.address = address;
  connection.authorization = *authorization;
  connection.channel = *std::move(channel);
  connection.stub = v1::Sinkserve::NewStub(connection.channel);
  const auto give_up = std::chrono::steady_clock::now() + wait;
  while (true) {
    grpc::ClientContext context;
    connection.Prepare(context);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    const grpc::Status status =
        connection.stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &connection.model);
    if (status.ok()) return connection;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        std::chrono::steady_clock::now() >= give_up) {
      return FromGrpc(status, absl::StrCat("cannot reach sinkserve at ", address));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace sinkserve::bench
