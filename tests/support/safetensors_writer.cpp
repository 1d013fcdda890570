#include "tests/support/safetensors_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <set>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/base/quote.h"
#include "common/base/utf8.h"
#include "nlohmann/json.hpp"

namespace sinkserve {
namespace {

using Json = nlohmann::json;

constexpr size_t kLengthPrefixBytes = 8;
constexpr char kMetadataKey[] = "__metadata__";

// absl::ErrnoToStatus, but never OK: a failed call that left errno at 0 is still a failure.
absl::Status ErrnoError(int err, absl::string_view message) {
  if (err == 0) return absl::UnknownError(message);
  return absl::ErrnoToStatus(err, message);
}

bool IsUtf8(std::string_view text) { return utf8::Validate(text).ok(); }

}  // namespace

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto fail = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts...));
  };
  // Layout like the official writer: decreasing element size, then name, so that every tensor
  // starts aligned to its element size once the data area is 8-byte aligned.
  std::vector<const TensorToWrite*> order;
  order.reserve(tensors.size());
  std::set<std::string_view> seen;
  for (const TensorToWrite& t : tensors) {
    if (t.name == kMetadataKey) return fail("tensor name \"__metadata__\" is reserved");
    if (!IsUtf8(t.name)) return fail("tensor name ", Quote(t.name), " is not UTF-8");
    if (!seen.insert(t.name).second) return fail("duplicate tensor name ", Quote(t.name));
    uint64_t numel = 1;
    for (int64_t dim : t.shape) {
      if (dim < 0) return fail("tensor ", Quote(t.name), ": negative dim ", dim);
      const auto d = static_cast<uint64_t>(dim);
      if (d != 0 && numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / d) {
        return fail("tensor ", Quote(t.name), ": too many elements");
      }
      numel *= d;
    }
    if (numel > std::numeric_limits<uint64_t>::max() / DTypeSize(t.dtype) ||
        numel * DTypeSize(t.dtype) != t.data.size()) {
      return fail("tensor ", Quote(t.name), ": ", t.data.size(), " bytes of data for ", numel,
                  " elements of ", std::string(DTypeName(t.dtype)));
    }
    order.push_back(&t);
  }
  for (const auto& [key, value] : metadata) {
    if (!IsUtf8(key) || !IsUtf8(value)) {
      return fail("metadata entry ", Quote(key), " is not UTF-8");
    }
  }
  std::sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    const size_t sa = DTypeSize(a->dtype), sb = DTypeSize(b->dtype);
    if (sa != sb) return sa > sb;
    return a->name < b->name;
  });

  Json header = Json::object();  // std::map-backed: keys come out sorted by name
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    header[t->name] = {{"dtype", std::string(DTypeName(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data area 8-byte aligned

  const std::string tmp_path = path + ".tmp";
  std::FILE* out = std::fopen(tmp_path.c_str(), "wb");
  if (out == nullptr) return ErrnoError(errno, absl::StrCat(tmp_path, ": cannot create"));
  unsigned char prefix[kLengthPrefixBytes];
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {
    prefix[i] = static_cast<unsigned char>(static_cast<uint64_t>(header_text.size()) >> (8 * i));
  }
  errno = 0;
  bool ok = std::fwrite(prefix, 1, sizeof(prefix), out) == sizeof(prefix) &&
            std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size();
  for (const TensorToWrite* t : order) {
    if (!ok) break;
    ok = t->data.empty() || std::fwrite(t->data.data(), 1, t->data.size(), out) == t->data.size();
  }
  int write_errno = errno;
  if (std::fclose(out) != 0 && ok) {
    ok = false;
    write_errno = errno;
  }
  if (!ok) {
    std::remove(tmp_path.c_str());
    return ErrnoError(write_errno, absl::StrCat(tmp_path, ": write failed"));
  }
  if (std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return ErrnoError(err, absl::StrCat(path, ": cannot rename ", tmp_path, " to it"));
  }
  return absl::OkStatus();
}

}  // namespace sinkserve
