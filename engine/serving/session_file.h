// The session file: one named session as the session store keeps it — a versioned header, then
// the cache contents exactly as the backend holds them.
//
//   "SINKSESS"  u32 version (1)  u32 section count (4)
//   then 4 sections, each:  u32 tag  u32 CRC-32C of the payload  u64 payload bytes  payload
//     1 model:   the model fingerprint, the cache contents' format
//     2 state:   id, cache policy, stream positions, sampling defaults, sampler parameters and
//                random state, unfed tokens, times, request count
//     3 history: the token history (repetition penalty)
//     4 cache:   the cache contents (KvCache::CopyContentsTo), last so that a reader can check
//                the header before touching the bulk
// Little-endian; strings are u32 length + bytes. Every read is bounds-checked: a damaged file
// is DATA_LOSS saying where, never a crash (fuzzed: tests/fuzz/session_file_fuzz.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/serving/session_table.h"

namespace sinkserve {

inline constexpr uint32_t kSessionFileVersion = 1;

// Everything a session needs to continue bit for bit, but its cache bytes.
struct SessionRecord {
  std::string model_fingerprint;  // Model::fingerprint()
  std::string contents_format;    // KvCache::ContentsFormat()
  std::string id;
  CachePolicy policy;              // resolved (a dense capacity is never 0)
  uint64_t history_limit_tokens = 0;
  SamplingParams base_sampling;    // SessionOptions::sampling (what a reset returns to)
  SamplingParams sampler_params;   // the sampler's now
  uint64_t random_state = 0;
  SamplingOverrides sampling_defaults;
  int64_t tokens_seen = 0;         // stream positions (tokens_cached/evicted follow from seen)
  int64_t tokens_cached = 0;
  int64_t tokens_evicted = 0;
  std::vector<int32_t> unfed_tokens;
  std::vector<int32_t> history;
  int64_t created_unix_ms = 0;
  int64_t last_used_unix_ms = 0;
  uint64_t requests = 0;
  uint64_t cache_bytes = 0;
};

// The header (sections 1–3 and the cache section's own header) for `record` followed by
// `cache`: the file is EncodeSessionHeader(record, cache) + cache.
std::vector<std::byte> EncodeSessionHeader(const SessionRecord& record,
                                           std::span<const std::byte> cache);

// A parsed file: the record and where the cache contents lie in `file`.
struct ParsedSessionFile {
  SessionRecord record;
  std::span<const std::byte> cache;
};
// DATA_LOSS naming the section and what is wrong (bad magic, unknown version, truncation, a
// checksum mismatch, a value out of range).
absl::StatusOr<ParsedSessionFile> ParseSessionFile(std::span<const std::byte> file);

}  // namespace sinkserve
