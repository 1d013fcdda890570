// SessionTable: the named sessions of a server — random string ids, idle expiry (TTL), least-
// recently-used eviction under a session-count or cache-memory limit, and the memory of ids
// that expired, so that their next use hears "expired" rather than "unknown".
//
// It sits on a SessionStore (which owns the sessions and their caches); one-shot streams live
// in the same store without a name. Owned by the scheduler thread: not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/session.h"

namespace sinkserve {

using SteadyClock = std::chrono::steady_clock;

// Sampling fields set by a request or a session; unset ones fall back (request → session →
// SamplingParams defaults).
struct SamplingOverrides {
  std::optional<float> temperature;
  std::optional<int> top_k;
  std::optional<float> top_p;
  std::optional<float> repetition_penalty;
  std::optional<uint64_t> seed;

  // These fields over `base`'s: a field set here wins.
  SamplingOverrides Over(const SamplingOverrides& base) const;
  // SamplingParams defaults with the set fields replaced.
  SamplingParams Resolve() const;
};

// A named session and what the scheduler keeps about it between requests.
struct SessionEntry {
  std::string id;
  Session* session = nullptr;  // owned by the SessionStore
  SamplingOverrides sampling_defaults;
  // Tokens of the stream not yet run through the model: the last generated token of the
  // previous request (its logits were never needed). The next request feeds them first.
  std::vector<int32_t> unfed_tokens;
  SteadyClock::time_point last_used;
  int64_t created_unix_ms = 0;
  int64_t last_used_unix_ms = 0;
  bool busy = false;  // a request is queued or running on it
  uint64_t requests = 0;
};

// A session's state as GetSession reports it.
struct SessionInfo {
  std::string id;
  CachePolicy policy;
  std::string cache_description;
  SamplingOverrides sampling_defaults;
  int64_t tokens_seen = 0;
  int tokens_cached = 0;
  int64_t tokens_evicted = 0;
  uint64_t cache_bytes = 0;
  bool busy = false;
  int64_t created_unix_ms = 0;
  int64_t last_used_unix_ms = 0;
  int64_t expires_in_ms = 0;
  uint64_t requests = 0;
};

int64_t UnixMillisNow();

// Bytes of the KV cache `policy` allocates for a model of `shape` (dense capacity resolved).
uint64_t CacheBytes(const KvShape& shape, const CachePolicy& policy);

class SessionTable {
 public:
  struct Limits {
    size_t max_sessions = 256;
    std::chrono::milliseconds ttl{600'000};
    uint64_t max_cache_bytes = 0;  // all caches of the store, named or not; 0 = no limit
  };

  // `now` stamps a new session's last use (tests pass a fake clock); every other time comes
  // from the caller.
  SessionTable(SessionStore& store, const KvShape& shape, const Limits& limits,
               std::function<SteadyClock::time_point()> now = SteadyClock::now);

  // A new named session, evicting least-recently-used idle sessions to stay within the limits.
  // RESOURCE_EXHAUSTED when every session that could make room is busy. Its id is `id` when
  // given (the client's choice: ALREADY_EXISTS when taken), else a fresh random one.
  absl::StatusOr<SessionEntry*> Create(const SessionOptions& options,
                                       const SamplingOverrides& sampling_defaults,
                                       const std::string& id = "");
  // NOT_FOUND saying whether `id` expired, was evicted, was closed, or never existed.
  absl::StatusOr<SessionEntry*> Find(const std::string& id);
  // Destroys a session (remembered as closed). The caller has stopped its requests.
  void Close(SessionEntry* entry);
  // Frees room for a cache of `bytes` (a one-shot stream): drops kept free caches, then evicts
  // idle sessions LRU-first. RESOURCE_EXHAUSTED when that is not enough.
  absl::Status ReserveCacheBytes(uint64_t bytes);

  // Expires idle sessions whose TTL has passed; returns when the next one will (if any).
  std::optional<SteadyClock::time_point> ExpireIdle(SteadyClock::time_point now);

  SessionInfo Info(const SessionEntry& entry, SteadyClock::time_point now) const;
  // Every session, most recently used first.
  std::vector<const SessionEntry*> MostRecentFirst() const;
  size_t size() const { return entries_.size(); }
  const Limits& limits() const { return limits_; }

 private:
  std::string NewId();
  // Destroys `entry`, remembering `reason` for its id's next use.
  void Remove(std::string id, std::string reason);  // by value: the entry owns the id
  // The least recently used idle session, or nullptr.
  SessionEntry* LeastRecentlyUsedIdle();

  SessionStore& store_;
  KvShape shape_;
  Limits limits_;
  std::function<SteadyClock::time_point()> now_;
  std::mt19937_64 random_;
  std::unordered_map<std::string, SessionEntry> entries_;
  // Why recent ids went away, oldest first (bounded).
  std::unordered_map<std::string, std::string> gone_;
  std::deque<std::string> gone_order_;
};

}  // namespace sinkserve
