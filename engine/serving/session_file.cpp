#include "engine/serving/session_file.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/crc32c.h"

namespace sinkserve {
namespace {

constexpr char kMagic[8] = {'S', 'I', 'N', 'K', 'S', 'E', 'S', 'S'};
enum Tag : uint32_t { kTagModel = 1, kTagState = 2, kTagHistory = 3, kTagCache = 4 };
constexpr uint32_t kSections = 4;
constexpr size_t kSectionHeaderBytes = 16;  // tag, crc, length

const char* TagName(uint32_t tag) {
  switch (tag) {
    case kTagModel:
      return "model";
    case kTagState:
      return "state";
    case kTagHistory:
      return "history";
    case kTagCache:
      return "cache";
  }
  return "unknown";
}

class Writer {
 public:
  explicit Writer(std::vector<std::byte>* out) : out_(out) {}
  void Raw(const void* data, size_t size) {
    const auto* bytes = static_cast<const std::byte*>(data);
    out_->insert(out_->end(), bytes, bytes + size);
  }
  template <typename T>
  void Put(T value) {
    Raw(&value, sizeof(value));
  }
  void String(const std::string& text) {
    Put<uint32_t>(static_cast<uint32_t>(text.size()));
    Raw(text.data(), text.size());
  }
  void Tokens(const std::vector<int32_t>& tokens) {
    Put<uint64_t>(tokens.size());
    Raw(tokens.data(), tokens.size() * sizeof(int32_t));
  }
  template <typename T>
  void Optional(const std::optional<T>& value) {
    Put<uint8_t>(value.has_value());
    Put<T>(value.value_or(T{}));
  }
  void Sampling(const SamplingParams& params) {
    Put(params.temperature);
    Put<int32_t>(params.top_k);
    Put(params.top_p);
    Put(params.repetition_penalty);
    Put(params.seed);
  }

 private:
  std::vector<std::byte>* out_;
};

// Reads a section's payload; the first failure sticks and names the field.
class Reader {
 public:
  Reader(std::span<const std::byte> data, const char* section) : data_(data), section_(section) {}

  template <typename T>
  T Get(const char* field) {
    T value{};
    if (Need(sizeof(T), field)) std::memcpy(&value, data_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return value;
  }
  std::string String(const char* field) {
    const uint32_t size = Get<uint32_t>(field);
    if (!Need(size, field)) return {};
    std::string text(reinterpret_cast<const char*>(data_.data() + at_), size);
    at_ += size;
    return text;
  }
  std::vector<int32_t> Tokens(const char* field) {
    const uint64_t count = Get<uint64_t>(field);
    if (count > (data_.size() - std::min(at_, data_.size())) / sizeof(int32_t)) {
      Fail(field, absl::StrCat(count, " tokens do not fit the section"));
      return {};
    }
    std::vector<int32_t> tokens(count);
    if (count > 0) std::memcpy(tokens.data(), data_.data() + at_, count * sizeof(int32_t));
    at_ += count * sizeof(int32_t);
    return tokens;
  }
  template <typename T>
  std::optional<T> Optional(const char* field) {
    const uint8_t set = Get<uint8_t>(field);
    const T value = Get<T>(field);
    if (set > 1) Fail(field, "bad presence flag");
    return set == 1 ? std::optional<T>(value) : std::nullopt;
  }
  SamplingParams Sampling(const char* field) {
    SamplingParams params;
    params.temperature = Get<float>(field);
    params.top_k = Get<int32_t>(field);
    params.top_p = Get<float>(field);
    params.repetition_penalty = Get<float>(field);
    params.seed = Get<uint64_t>(field);
    if (absl::Status valid = params.Validate(); !valid.ok()) Fail(field, valid.message());
    return params;
  }
  void Fail(const char* field, absl::string_view why) {
    if (status_.ok()) {
      status_ = absl::DataLossError(
          absl::StrCat("session file: section ", section_, ", ", field, ": ", why));
    }
  }
  // OK when every byte was read and nothing failed.
  absl::Status Finish() {
    if (status_.ok() && at_ != data_.size()) Fail("end", "trailing bytes");
    return status_;
  }

 private:
  bool Need(size_t size, const char* field) {
    if (at_ <= data_.size() && size <= data_.size() - at_) return status_.ok();
    Fail(field, "truncated");
    at_ = data_.size();
    return false;
  }

  std::span<const std::byte> data_;
  const char* section_;
  size_t at_ = 0;
  absl::Status status_;
};

void PutSection(std::vector<std::byte>* out, uint32_t tag, std::span<const std::byte> payload,
                bool with_payload = true) {
  Writer writer(out);
  writer.Put<uint32_t>(tag);
  writer.Put<uint32_t>(Crc32c(payload));
  writer.Put<uint64_t>(payload.size());
  if (with_payload) writer.Raw(payload.data(), payload.size());
}

}  // namespace

std::vector<std::byte> EncodeSessionHeader(const SessionRecord& record,
                                           std::span<const std::byte> cache) {
  std::vector<std::byte> model, state, history, out;
  {
    Writer writer(&model);
    writer.String(record.model_fingerprint);
    writer.String(record.contents_format);
  }
  {
    Writer writer(&state);
    writer.String(record.id);
    writer.Put<uint8_t>(record.policy.kind == CachePolicy::Kind::kCachePolicyDense);
    writer.Put<int32_t>(record.policy.sink_tokens);
    writer.Put<int32_t>(record.policy.window_tokens);
    writer.Put<int32_t>(record.policy.dense_capacity_tokens);
    writer.Put(record.history_limit_tokens);
    writer.Sampling(record.base_sampling);
    writer.Sampling(record.sampler_params);
    writer.Put(record.random_state);
    writer.Optional(record.sampling_defaults.temperature);
    writer.Optional(record.sampling_defaults.top_k);
    writer.Optional(record.sampling_defaults.top_p);
    writer.Optional(record.sampling_defaults.repetition_penalty);
    writer.Optional(record.sampling_defaults.seed);
    writer.Put(record.tokens_seen);
    writer.Put(record.tokens_cached);
    writer.Put(record.tokens_evicted);
    writer.Tokens(record.unfed_tokens);
    writer.Put(record.created_unix_ms);
    writer.Put(record.last_used_unix_ms);
    writer.Put(record.requests);
  }
  Writer(&history).Tokens(record.history);
  Writer writer(&out);
  writer.Raw(kMagic, sizeof(kMagic));
  writer.Put<uint32_t>(kSessionFileVersion);
  writer.Put<uint32_t>(kSections);
  PutSection(&out, kTagModel, model);
  PutSection(&out, kTagState, state);
  PutSection(&out, kTagHistory, history);
  PutSection(&out, kTagCache, cache, /*with_payload=*/false);
  return out;
}

absl::StatusOr<ParsedSessionFile> ParseSessionFile(std::span<const std::byte> file) {
  Reader top(file.first(std::min<size_t>(file.size(), 16)), "header");
  char magic[8];
  for (char& c : magic) c = static_cast<char>(top.Get<uint8_t>("magic"));
  const uint32_t version = top.Get<uint32_t>("version");
  const uint32_t sections = top.Get<uint32_t>("section count");
  if (absl::Status status = top.Finish(); !status.ok()) return status;
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("session file: not a sinkserve session file (bad magic)");
  }
  if (version != kSessionFileVersion) {
    return absl::DataLossError(absl::StrCat("session file: version ", version,
                                            ", this server reads version ", kSessionFileVersion));
  }
  if (sections != kSections) {
    return absl::DataLossError(
        absl::StrCat("session file: ", sections, " sections, expected ", kSections));
  }
  // The sections, in order, each checked against its CRC.
  std::span<const std::byte> payloads[kSections];
  size_t at = 16;
  for (uint32_t i = 0; i < kSections; ++i) {
    const uint32_t expected_tag = i + 1;
    Reader head(
        file.subspan(std::min(at, file.size()),
                     std::min(kSectionHeaderBytes, file.size() - std::min(at, file.size()))),
        TagName(expected_tag));
    const uint32_t tag = head.Get<uint32_t>("tag");
    const uint32_t crc = head.Get<uint32_t>("checksum");
    const uint64_t length = head.Get<uint64_t>("length");
    if (absl::Status status = head.Finish(); !status.ok()) return status;
    at += kSectionHeaderBytes;
    if (tag != expected_tag) {
      return absl::DataLossError(absl::StrCat("session file: section ", i + 1, " has tag ", tag,
                                              ", expected ", expected_tag, " (",
                                              TagName(expected_tag), ")"));
    }
    if (length > file.size() - at) {
      return absl::DataLossError(absl::StrCat("session file: section ", TagName(tag),
                                              " is truncated: ", length, " bytes declared, ",
                                              file.size() - at, " left in the file"));
    }
    payloads[i] = file.subspan(at, length);
    at += length;
    if (Crc32c(payloads[i]) != crc) {
      return absl::DataLossError(
          absl::StrCat("session file: section ", TagName(tag), " fails its checksum"));
    }
  }
  if (at != file.size()) {
    return absl::DataLossError(
        absl::StrCat("session file: ", file.size() - at, " bytes after the last section"));
  }

  ParsedSessionFile parsed;
  SessionRecord& record = parsed.record;
  {
    Reader reader(payloads[0], "model");
    record.model_fingerprint = reader.String("fingerprint");
    record.contents_format = reader.String("contents format");
    if (absl::Status status = reader.Finish(); !status.ok()) return status;
  }
  {
    Reader reader(payloads[1], "state");
    record.id = reader.String("id");
    const uint8_t dense = reader.Get<uint8_t>("policy kind");
    if (dense > 1) reader.Fail("policy kind", "neither dense nor streaming");
    record.policy.kind = dense == 1 ? CachePolicy::Kind::kCachePolicyDense
                                    : CachePolicy::Kind::kCachePolicyStreaming;
    record.policy.sink_tokens = reader.Get<int32_t>("sink tokens");
    record.policy.window_tokens = reader.Get<int32_t>("window tokens");
    record.policy.dense_capacity_tokens = reader.Get<int32_t>("dense capacity");
    if (absl::Status valid = record.policy.Validate(); !valid.ok()) {
      reader.Fail("policy", valid.message());
    }
    record.history_limit_tokens = reader.Get<uint64_t>("history limit");
    record.base_sampling = reader.Sampling("base sampling");
    record.sampler_params = reader.Sampling("sampler parameters");
    record.random_state = reader.Get<uint64_t>("random state");
    record.sampling_defaults.temperature = reader.Optional<float>("default temperature");
    record.sampling_defaults.top_k = reader.Optional<int>("default top_k");
    record.sampling_defaults.top_p = reader.Optional<float>("default top_p");
    record.sampling_defaults.repetition_penalty =
        reader.Optional<float>("default repetition_penalty");
    record.sampling_defaults.seed = reader.Optional<uint64_t>("default seed");
    record.tokens_seen = reader.Get<int64_t>("tokens seen");
    record.tokens_cached = reader.Get<int64_t>("tokens cached");
    record.tokens_evicted = reader.Get<int64_t>("tokens evicted");
    if (record.tokens_seen < 0 || record.tokens_cached < 0 || record.tokens_evicted < 0 ||
        record.tokens_cached > record.tokens_seen ||
        record.tokens_seen - record.tokens_cached != record.tokens_evicted) {
      reader.Fail("stream positions",
                  absl::StrCat("seen ", record.tokens_seen, ", cached ", record.tokens_cached,
                               ", evicted ", record.tokens_evicted, " do not add up"));
    }
    record.unfed_tokens = reader.Tokens("unfed tokens");
    record.created_unix_ms = reader.Get<int64_t>("created");
    record.last_used_unix_ms = reader.Get<int64_t>("last used");
    record.requests = reader.Get<uint64_t>("requests");
    if (absl::Status status = reader.Finish(); !status.ok()) return status;
  }
  {
    Reader reader(payloads[2], "history");
    record.history = reader.Tokens("tokens");
    if (absl::Status status = reader.Finish(); !status.ok()) return status;
    if (record.history.size() > record.history_limit_tokens) {
      return absl::DataLossError(
          absl::StrCat("session file: section history holds ", record.history.size(),
                       " tokens, more than its limit ", record.history_limit_tokens));
    }
  }
  parsed.cache = payloads[3];
  record.cache_bytes = parsed.cache.size();
  return parsed;
}

}  // namespace sinkserve
