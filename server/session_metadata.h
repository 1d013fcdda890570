// The x-session-id request metadata as a session id. nginx and the ingress hash that key for
// session affinity (deploy/), so a client that names its session there and in the API lands on
// the replica that holds it: the metadata names the session a call works on or creates when
// the request's own session_id field is empty (see CreateSession in the proto).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/statusor.h"

namespace sinkserve::server {

inline constexpr char kSessionIdMetadata[] = "x-session-id";

// The session a call names: `field` (the request's session_id) when set, else the
// x-session-id metadata, else "". INVALID_ARGUMENT naming session_id when both are set and
// differ.
absl::StatusOr<std::string> CallSessionId(const grpc::ServerContextBase& context,
                                          const std::string& field);

}  // namespace sinkserve::server
