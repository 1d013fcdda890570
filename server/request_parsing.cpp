#include "server/request_parsing.h"

#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/base/utf8.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace sinkserve::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;

constexpr int kMaxNesting = 32;

// Walks the wire format of `bytes` as a `type` message and returns the first string field that
// is not valid UTF-8 ("stop_strings[1]: invalid UTF-8 ..."), or "" when there is none.
std::string FindInvalidUtf8(const std::string& bytes, const Descriptor& type,
                            const std::string& prefix, int depth) {
  google::protobuf::io::CodedInputStream input(reinterpret_cast<const uint8_t*>(bytes.data()),
                                               static_cast<int>(bytes.size()));
  std::unordered_map<int, int> repeated_index;
  while (const uint32_t tag = input.ReadTag()) {
    const FieldDescriptor* field = type.FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    if (WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::SkipField(&input, tag)) return "";
      continue;
    }
    uint32_t length = 0;
    std::string payload;
    if (!input.ReadVarint32(&length) || !input.ReadString(&payload, static_cast<int>(length))) {
      return "";
    }
    if (field == nullptr) continue;
    std::string name = prefix + field->name();
    if (field->is_repeated()) absl::StrAppend(&name, "[", repeated_index[field->number()]++, "]");
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      if (absl::Status valid = utf8::Validate(payload); !valid.ok()) {
        return absl::StrCat(name, ": ", valid.message());
      }
    } else if (field->type() == FieldDescriptor::TYPE_MESSAGE && depth < kMaxNesting) {
      std::string inner = FindInvalidUtf8(payload, *field->message_type(), name + ".", depth + 1);
      if (!inner.empty()) return inner;
    }
  }
  return "";
}

}  // namespace

grpc::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request: unreadable message");
  }
  std::string bytes;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  if (message->ParseFromString(bytes)) return grpc::Status::OK;
  std::string field = FindInvalidUtf8(bytes, *message->GetDescriptor(), "", 0);
  if (field.empty()) {
    field = absl::StrCat("request: not a valid ", message->GetDescriptor()->full_name(),
                         " message (malformed protobuf encoding)");
  }
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, field);
}

grpc::ByteBuffer SerializeResponse(const google::protobuf::Message& message) {
  const std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace sinkserve::server
