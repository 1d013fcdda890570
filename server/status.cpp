#include "server/status.h"

namespace sinkserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status, const FieldNames& names) {
  if (status.ok()) return grpc::Status::OK;
  static_assert(static_cast<int>(absl::StatusCode::kInvalidArgument) ==
                static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  static_assert(static_cast<int>(absl::StatusCode::kUnauthenticated) ==
                static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(InApiWords(status, names).message()));
}

std::string StatusCodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace sinkserve::server
