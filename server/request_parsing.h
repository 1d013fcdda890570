// Request parsing for the raw (ByteBuffer) gRPC methods.
//
// Why raw: protobuf refuses a proto3 `string` field holding invalid UTF-8 without saying which
// field, and gRPC 1.51's callback handlers then answer UNIMPLEMENTED with no message. The
// service therefore receives request bytes and parses them here, so that such a request gets
// INVALID_ARGUMENT naming the field ("prompt_text: invalid UTF-8 at byte offset 3: ...").
#pragma once

#include <grpcpp/grpcpp.h>

#include "google/protobuf/message.h"

namespace sinkserve::server {

// Parses `buffer` into `message`. INVALID_ARGUMENT naming the field for a string field that is
// not valid UTF-8, or describing the malformed message.
grpc::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message);

// Serializes a response for a raw method.
grpc::ByteBuffer SerializeResponse(const google::protobuf::Message& message);

}  // namespace sinkserve::server
