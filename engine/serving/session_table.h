// SessionTable: the named sessions of a server — random string ids, idle expiry (TTL), least-
// recently-used eviction under a session-count or cache-memory limit, and the memory of ids
// that expired, so that their next use hears "expired" rather than "unknown".
//
// With a PersistentSessionStore (`--session-store`), sessions survive leaving memory: an evicted
// session is written there (spilled) instead of dropped, Persist() writes one after a turn,
// SaveAll() writes every idle one at drain, and Find() restores a session that is not in
// memory from the store — checked (checksums, model fingerprint, cache format) and leased, so
// that two replicas never both restore it.
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
#include "engine/serving/sampling_overrides.h"
#include "engine/serving/session_store.h"
#include "engine/serving/steady_clock.h"
#include "engine/session.h"

namespace sinkserve {

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
  bool stored = false;  // the session store holds its current state (nothing to write at drain)
};

enum class SessionLocation : uint8_t { kSessionLocationMemory, kSessionLocationStore };

// A session's state as GetSession reports it.
struct SessionInfo {
  std::string id;
  SessionLocation location = SessionLocation::kSessionLocationMemory;
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

// Why a session was written to the store.
enum class StoreWrite : uint8_t {
  kStoreWriteSpill,  // evicted from memory (LRU, --max-cache-bytes)
  kStoreWriteDrain,  // the server is shutting down
  kStoreWriteTurn,   // after a turn (--session-persist turn)
};
const char* StoreWriteName(StoreWrite why);  // "spill", "drain", "turn"

// What metrics and logs need of the session store (scheduler thread; must not block).
class SessionStoreListener {
 public:
  virtual ~SessionStoreListener() = default;
  // A write finished: OK, or why it failed (the session then stays in memory, unless spilled).
  virtual void OnSessionWritten(StoreWrite why, const std::string& id, uint64_t bytes,
                                double seconds, const absl::Status& status) {}
  virtual void OnSessionRestored(const std::string& id, uint64_t bytes, double seconds) {}
  // A restore failed: ABORTED (lease held), DATA_LOSS (corrupt, quarantined),
  // FAILED_PRECONDITION (another model or cache format), or an I/O error.
  virtual void OnSessionRestoreFailed(const std::string& id, const absl::Status& status) {}
  virtual void OnStoreUsage(const StoreUsage& usage) {}
};

// How a SessionTable uses a session store.
struct SessionPersistence {
  PersistentSessionStore* store = nullptr;  // nullptr: sessions live in memory only
  bool every_turn = false;                  // --session-persist turn
  std::string model_fingerprint;            // Model::fingerprint()
  int vocab_size = 0;                       // restored token ids must be below it
  std::string owner;                        // this server's id, the owner of its leases
  std::chrono::milliseconds lease{30'000};  // how long a restore may hold its lease
  std::chrono::milliseconds store_ttl{0};   // files not written for this long go; 0 = never
};

// Bytes of the KV cache `policy` allocates for a model of `shape` (dense capacity resolved).
uint64_t CacheBytes(const KvShape& shape, const CachePolicy& policy);

class SessionTable {
 public:
  struct Limits {
    size_t max_sessions = 256;
    std::chrono::milliseconds ttl{600'000};
    uint64_t max_cache_bytes = 0;  // all caches of the store, named or not; 0 = no limit
  };

  // `now` stamps a new or restored session's last use (tests pass a fake clock); every other
  // time comes from the caller.
  SessionTable(SessionStore& store, const KvShape& shape, const Limits& limits,
               const SessionPersistence& persistence = {}, SessionStoreListener* listener = nullptr,
               std::function<SteadyClock::time_point()> now = SteadyClock::now);

  // A new named session, evicting least-recently-used idle sessions to stay within the limits.
  // RESOURCE_EXHAUSTED when every session that could make room is busy. Its id is `id` when
  // given (the client's choice: ALREADY_EXISTS when taken), else a fresh random one.
  absl::StatusOr<SessionEntry*> Create(const SessionOptions& options,
                                       const SamplingOverrides& sampling_defaults,
                                       const std::string& id = "");
  // The session in memory, else restored from the store. NOT_FOUND saying whether `id`
  // expired, was evicted, was closed, or never existed; the restore's errors (see
  // SessionStoreListener::OnSessionRestoreFailed).
  absl::StatusOr<SessionEntry*> Find(const std::string& id);
  // Where session `id` is and its state, without restoring it; NOT_FOUND as Find.
  absl::StatusOr<SessionInfo> Locate(const std::string& id, SteadyClock::time_point now);
  // Destroys a session (remembered as closed), and its file in the store. The caller has
  // stopped its requests.
  void Close(SessionEntry* entry);
  // Deletes session `id` from the store when it is there and not in memory; its last state.
  absl::StatusOr<SessionInfo> CloseStored(const std::string& id);

  // Writes an idle session to the store (no-op without one). On failure the session stays in
  // memory as it is; the listener hears either way.
  absl::Status Persist(SessionEntry& entry, StoreWrite why);
  // Writes every idle session the store does not already hold as it is (drain); returns how
  // many were written.
  int PersistAll(StoreWrite why);
  // Removes files of the store not written for store_ttl.
  void SweepStore();
  bool persists_every_turn() const { return persistence_.store && persistence_.every_turn; }
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
  // Destroys `entry`; its id's next use hears `gone` (NOT_FOUND saying why).
  void Remove(std::string id, absl::Status gone);  // by value: the entry owns the id
  // Remembers what the next use of `id` hears (bounded).
  void Remember(std::string id, absl::Status gone);
  // Evicts an idle session to make room: spilled to the store when there is one, else (or
  // when the write fails) destroyed with `reason`.
  void Evict(SessionEntry* victim, std::string reason);
  // Room for one more session holding a cache of `bytes` (evicting LRU-first).
  absl::Status MakeRoom(uint64_t bytes);
  // Restores session `id` from the store (lease, load, check, rebuild).
  absl::StatusOr<SessionEntry*> Restore(const std::string& id);
  absl::StatusOr<SessionEntry*> RestoreLeased(const std::string& id);
  void ReportStoreUsage();
  // The least recently used idle session, or nullptr.
  SessionEntry* LeastRecentlyUsedIdle();

  SessionStore& store_;
  KvShape shape_;
  Limits limits_;
  std::function<SteadyClock::time_point()> now_;
  SessionPersistence persistence_;
  SessionStoreListener* listener_;
  std::vector<std::byte> contents_;      // scratch: a cache's bytes on their way to the store
  SteadyClock::duration making_room_{};  // of the current restore, spent evicting others
  std::mt19937_64 random_;
  std::unordered_map<std::string, SessionEntry> entries_;
  // Why recent ids went away (the NOT_FOUND their next use hears), oldest first (bounded).
  std::unordered_map<std::string, absl::Status> gone_;
  std::deque<std::string> gone_order_;
};

}  // namespace sinkserve
