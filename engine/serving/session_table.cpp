#include "engine/serving/session_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sinkserve {
namespace {

constexpr size_t kRememberedGoneIds = 4096;

}  // namespace

SamplingOverrides SamplingOverrides::Over(const SamplingOverrides& base) const {
  SamplingOverrides merged = base;
  if (temperature) merged.temperature = temperature;
  if (top_k) merged.top_k = top_k;
  if (top_p) merged.top_p = top_p;
  if (repetition_penalty) merged.repetition_penalty = repetition_penalty;
  if (seed) merged.seed = seed;
  return merged;
}

SamplingParams SamplingOverrides::Resolve() const {
  SamplingParams params;
  if (temperature) params.temperature = *temperature;
  if (top_k) params.top_k = *top_k;
  if (top_p) params.top_p = *top_p;
  if (repetition_penalty) params.repetition_penalty = *repetition_penalty;
  if (seed) params.seed = *seed;
  return params;
}

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t CacheBytes(const KvShape& shape, const CachePolicy& policy) {
  // The slots the cache allocates: a streaming one's spare step slots included. (The dense
  // capacity is resolved by the caller, so no default applies.)
  const auto tokens = static_cast<uint64_t>(policy.CapacityTokens(/*max_positions=*/0));
  // Keys and values, fp32: the layout of KvCache.
  return tokens * shape.num_layers * 2 * shape.num_heads * shape.head_dim * sizeof(float);
}

SessionTable::SessionTable(SessionStore& store, const KvShape& shape, const Limits& limits,
                           std::function<SteadyClock::time_point()> now)
    : store_(store),
      shape_(shape),
      limits_(limits),
      now_(std::move(now)),
      random_(std::random_device{}()) {}

std::string SessionTable::NewId() {
  // 128 random bits: ids cannot be guessed, and an id from before a restart is never reused.
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  do {
    id = "s_";
    for (int word = 0; word < 2; ++word) {
      uint64_t bits = random_();
      for (int i = 0; i < 16; ++i, bits >>= 4) id += kHex[bits & 15];
    }
  } while (entries_.contains(id) || gone_.contains(id));
  return id;
}

absl::StatusOr<SessionEntry*> SessionTable::Create(const SessionOptions& options,
                                                   const SamplingOverrides& sampling_defaults,
                                                   const std::string& id) {
  if (entries_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("session_id: session ", id, " already exists"));
  }
  while (entries_.size() >= limits_.max_sessions) {
    SessionEntry* victim = LeastRecentlyUsedIdle();
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("sessions: all ", limits_.max_sessions,
                       " sessions (the server's --max-sessions) are busy; retry later"));
    }
    Remove(victim->id, "was evicted (least recently used) to make room for a new session under "
                       "the server's session limit");
  }
  if (absl::Status status = ReserveCacheBytes(CacheBytes(shape_, options.policy)); !status.ok()) {
    return status;
  }
  absl::StatusOr<Session*> session = store_.Create(options);
  if (!session.ok()) return session.status();
  const std::string chosen = id.empty() ? NewId() : id;
  SessionEntry& entry = entries_[chosen];
  entry.id = chosen;
  entry.session = *session;
  entry.sampling_defaults = sampling_defaults;
  entry.last_used = now_();
  entry.created_unix_ms = entry.last_used_unix_ms = UnixMillisNow();
  return &entry;
}

absl::StatusOr<SessionEntry*> SessionTable::Find(const std::string& id) {
  if (auto it = entries_.find(id); it != entries_.end()) return &it->second;
  if (auto it = gone_.find(id); it != gone_.end()) {
    return absl::NotFoundError(absl::StrCat("session_id: session ", id, " ", it->second));
  }
  return absl::NotFoundError(absl::StrCat(
      "session_id: unknown session ", id,
      " (never created on this server, or expired long ago, or the server restarted)"));
}

void SessionTable::Close(SessionEntry* entry) { Remove(entry->id, "was closed"); }

void SessionTable::Remove(std::string id, std::string reason) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  (void)store_.Destroy(it->second.session->id());
  entries_.erase(it);
  gone_[id] = std::move(reason);
  gone_order_.push_back(id);
  while (gone_order_.size() > kRememberedGoneIds) {
    gone_.erase(gone_order_.front());
    gone_order_.pop_front();
  }
}

SessionEntry* SessionTable::LeastRecentlyUsedIdle() {
  SessionEntry* oldest = nullptr;
  for (auto& [id, entry] : entries_) {
    if (!entry.busy && (oldest == nullptr || entry.last_used < oldest->last_used)) oldest = &entry;
  }
  return oldest;
}

absl::Status SessionTable::ReserveCacheBytes(uint64_t bytes) {
  if (limits_.max_cache_bytes == 0) return absl::OkStatus();
  if (bytes > limits_.max_cache_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cache_policy: the cache needs ", bytes, " bytes, more than the server's whole cache "
        "memory limit of ", limits_.max_cache_bytes, " bytes (--max-cache-bytes)"));
  }
  auto used = [&] { return store_.cache_bytes() + store_.free_cache_bytes(); };
  if (used() + bytes > limits_.max_cache_bytes) store_.ReleaseFreeCaches();
  while (used() + bytes > limits_.max_cache_bytes) {
    SessionEntry* victim = LeastRecentlyUsedIdle();
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cache memory: ", store_.cache_bytes(), " of the server's ", limits_.max_cache_bytes,
          " bytes (--max-cache-bytes) are held by running requests and busy sessions; ",
          bytes, " more are needed; retry later"));
    }
    Remove(victim->id, "was evicted (least recently used) to make room under the server's "
                       "cache memory limit");
    store_.ReleaseFreeCaches();  // the victim's cache went to the free list: really free it
  }
  return absl::OkStatus();
}

std::optional<SteadyClock::time_point> SessionTable::ExpireIdle(SteadyClock::time_point now) {
  std::vector<std::string> expired;
  std::optional<SteadyClock::time_point> next;
  for (const auto& [id, entry] : entries_) {
    if (entry.busy) continue;
    const SteadyClock::time_point expiry = entry.last_used + limits_.ttl;
    if (expiry <= now) {
      expired.push_back(id);
    } else if (!next || expiry < *next) {
      next = expiry;
    }
  }
  for (const std::string& id : expired) {
    Remove(id, absl::StrCat("expired: idle for more than ",
                            std::chrono::duration<double>(limits_.ttl).count(),
                            " s (the server's --session-ttl-s)"));
  }
  return next;
}

SessionInfo SessionTable::Info(const SessionEntry& entry, SteadyClock::time_point now) const {
  const Session& session = *entry.session;
  SessionInfo info;
  info.id = entry.id;
  info.policy = session.options().policy;
  info.cache_description = session.cache().Describe();
  info.sampling_defaults = entry.sampling_defaults;
  info.tokens_seen = session.cache().tokens_seen();
  info.tokens_cached = session.cache().tokens_cached();
  info.tokens_evicted = session.cache().tokens_evicted();
  info.cache_bytes = session.cache().bytes();
  info.busy = entry.busy;
  info.created_unix_ms = entry.created_unix_ms;
  info.last_used_unix_ms = entry.last_used_unix_ms;
  info.expires_in_ms =
      entry.busy ? limits_.ttl.count()
                 : std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                            entry.last_used + limits_.ttl - now)
                                            .count());
  info.requests = entry.requests;
  return info;
}

std::vector<const SessionEntry*> SessionTable::MostRecentFirst() const {
  std::vector<const SessionEntry*> list;
  list.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) list.push_back(&entry);
  std::sort(list.begin(), list.end(), [](const SessionEntry* a, const SessionEntry* b) {
    return a->last_used > b->last_used;
  });
  return list;
}

}  // namespace sinkserve
