// Engine errors (absl::Status) to gRPC statuses: the one place that maps them
// (docs/conventions.md §8).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"
#include "server/error_names.h"

namespace sinkserve::server {

// absl's status codes are gRPC's codes by definition; the message starts with the offending
// field's name (docs/api.md): an engine error's subject is named as `names` and the flags say
// (server/error_names.h).
grpc::Status ToGrpcStatus(const absl::Status& status, const FieldNames& names = {});

// "OK", "INVALID_ARGUMENT", ...: the `code` label of sinkserve_requests_total.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace sinkserve::server
