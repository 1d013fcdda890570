#include "engine/serving/session_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/serving/error_subject.h"
#include "engine/serving/session_file.h"

namespace sinkserve {
namespace {

constexpr size_t kRememberedGoneIds = 4096;

// The NOT_FOUND that the next use of session `id`, gone for `reason`, hears.
absl::Status GoneError(const std::string& id, const std::string& reason) {
  return absl::NotFoundError(absl::StrCat("session_id: session ", id, " ", reason));
}

}  // namespace

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

const char* StoreWriteName(StoreWrite why) {
  switch (why) {
    case StoreWrite::kStoreWriteSpill:
      return "spill";
    case StoreWrite::kStoreWriteDrain:
      return "drain";
    case StoreWrite::kStoreWriteTurn:
      return "turn";
  }
  return "unknown";
}

SessionTable::SessionTable(SessionStore& store, const KvShape& shape, const Limits& limits,
                           const SessionPersistence& persistence, SessionStoreListener* listener,
                           std::function<SteadyClock::time_point()> now)
    : store_(store),
      shape_(shape),
      limits_(limits),
      now_(std::move(now)),
      persistence_(persistence),
      listener_(listener),
      random_(std::random_device{}()) {
  static SessionStoreListener no_listener;
  if (listener_ == nullptr) listener_ = &no_listener;
  if (persistence_.store != nullptr) ReportStoreUsage();
}

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
  if (entries_.contains(id) ||
      (!id.empty() && persistence_.store != nullptr && persistence_.store->Contains(id))) {
    return absl::AlreadyExistsError(absl::StrCat("session_id: session ", id, " already exists"));
  }
  if (absl::Status status = MakeRoom(CacheBytes(shape_, options.policy)); !status.ok()) {
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

absl::Status SessionTable::MakeRoom(uint64_t bytes) {
  while (entries_.size() >= limits_.max_sessions) {
    SessionEntry* victim = LeastRecentlyUsedIdle();
    if (victim == nullptr) {
      return SubjectError(absl::StatusCode::kResourceExhausted,
                          ErrorSubject::kErrorSubjectSessionLimit,
                          absl::StrCat("sessions: all ", limits_.max_sessions,
                                       " sessions (max_sessions) are busy; retry later"));
    }
    Evict(victim,
          "was evicted (least recently used) to make room for a new session under the "
          "server's session limit");
  }
  return ReserveCacheBytes(bytes);
}

absl::StatusOr<SessionEntry*> SessionTable::Find(const std::string& id) {
  if (auto it = entries_.find(id); it != entries_.end()) return &it->second;
  if (persistence_.store != nullptr && persistence_.store->Contains(id)) return Restore(id);
  if (auto it = gone_.find(id); it != gone_.end()) return it->second;
  return absl::NotFoundError(absl::StrCat(
      "session_id: unknown session ", id,
      " (never created on this server, or expired long ago, or the server restarted)"));
}

void SessionTable::Close(SessionEntry* entry) {
  if (persistence_.store != nullptr) {
    (void)persistence_.store->Remove(entry->id);
    ReportStoreUsage();
  }
  Remove(entry->id, GoneError(entry->id, "was closed"));
}

void SessionTable::Evict(SessionEntry* victim, std::string reason) {
  if (persistence_.store != nullptr) {
    const absl::Status written = Persist(*victim, StoreWrite::kStoreWriteSpill);
    if (written.ok()) {
      // In the store now, not gone: its next use restores it.
      const std::string id = victim->id;
      (void)store_.Destroy(victim->session->id());
      entries_.erase(id);
      return;
    }
    reason =
        absl::StrCat(reason, "; writing it to the session store failed (", written.message(), ")");
  }
  Remove(victim->id, GoneError(victim->id, reason));
}

void SessionTable::Remove(std::string id, absl::Status gone) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  (void)store_.Destroy(it->second.session->id());
  entries_.erase(it);
  Remember(std::move(id), std::move(gone));
}

void SessionTable::Remember(std::string id, absl::Status gone) {
  gone_[id] = std::move(gone);
  gone_order_.push_back(std::move(id));
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
    return SubjectError(absl::StatusCode::kResourceExhausted, ErrorSubject::kErrorSubjectCacheLimit,
                        absl::StrCat("cache_policy: the cache needs ", bytes,
                                     " bytes, more than the whole cache memory limit of ",
                                     limits_.max_cache_bytes, " bytes (max_cache_bytes)"));
  }
  auto used = [&] { return store_.cache_bytes() + store_.free_cache_bytes(); };
  if (used() + bytes > limits_.max_cache_bytes) store_.ReleaseFreeCaches();
  while (used() + bytes > limits_.max_cache_bytes) {
    SessionEntry* victim = LeastRecentlyUsedIdle();
    if (victim == nullptr) {
      return SubjectError(
          absl::StatusCode::kResourceExhausted, ErrorSubject::kErrorSubjectCacheLimit,
          absl::StrCat("cache memory: ", store_.cache_bytes(), " of the limit's ",
                       limits_.max_cache_bytes,
                       " bytes (max_cache_bytes) are held by running requests and busy "
                       "sessions; ",
                       bytes, " more are needed; retry later"));
    }
    Evict(victim,
          "was evicted (least recently used) to make room under the server's cache "
          "memory limit");
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
    if (persistence_.store != nullptr) (void)persistence_.store->Remove(id);
    // The answer names the TTL, which a server words as its flag.
    Remove(id,
           SubjectError(absl::StatusCode::kNotFound, ErrorSubject::kErrorSubjectSessionTtl,
                        absl::StrCat("session_id: session ", id, " expired: idle for more than ",
                                     std::chrono::duration<double>(limits_.ttl).count(),
                                     " s (session_ttl)")));
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

absl::StatusOr<SessionInfo> SessionTable::Locate(const std::string& id,
                                                 SteadyClock::time_point now) {
  if (auto it = entries_.find(id); it != entries_.end()) return Info(it->second, now);
  if (persistence_.store == nullptr || !persistence_.store->Contains(id)) {
    return Find(id).status();  // NOT_FOUND saying why
  }
  absl::StatusOr<std::vector<std::byte>> file = persistence_.store->Load(id);
  if (!file.ok()) return file.status();
  absl::StatusOr<ParsedSessionFile> parsed = ParseSessionFile(*file);
  if (!parsed.ok()) {
    return absl::DataLossError(
        absl::StrCat("session_id: session ", id,
                     "'s file in the store is damaged: ", parsed.status().message()));
  }
  const SessionRecord& record = parsed->record;
  SessionInfo info;
  info.id = id;
  info.location = SessionLocation::kSessionLocationStore;
  info.policy = record.policy;
  info.cache_description = record.policy.Describe();
  info.sampling_defaults = record.sampling_defaults;
  info.tokens_seen = record.tokens_seen;
  info.tokens_cached = static_cast<int>(record.tokens_cached);
  info.tokens_evicted = record.tokens_evicted;
  info.cache_bytes = record.cache_bytes;
  info.created_unix_ms = record.created_unix_ms;
  info.last_used_unix_ms = record.last_used_unix_ms;
  info.expires_in_ms =
      persistence_.store_ttl.count() > 0
          ? std::max<int64_t>(
                0, record.last_used_unix_ms + persistence_.store_ttl.count() - UnixMillisNow())
          : 0;
  info.requests = record.requests;
  return info;
}

absl::StatusOr<SessionInfo> SessionTable::CloseStored(const std::string& id) {
  absl::StatusOr<SessionInfo> info = Locate(id, SteadyClock::now());
  if (info.ok() || info.status().code() == absl::StatusCode::kDataLoss) {
    if (absl::Status removed = persistence_.store->Remove(id); !removed.ok()) return removed;
    ReportStoreUsage();
    Remember(id, GoneError(id, "was closed"));
  }
  return info;
}

absl::Status SessionTable::Persist(SessionEntry& entry, StoreWrite why) {
  if (persistence_.store == nullptr) return absl::OkStatus();
  const SteadyClock::time_point start = SteadyClock::now();
  const Session& session = *entry.session;
  const KvCache& cache = session.cache();
  SessionRecord record;
  record.model_fingerprint = persistence_.model_fingerprint;
  record.contents_format = cache.ContentsFormat();
  record.id = entry.id;
  record.policy = session.options().policy;
  record.history_limit_tokens = session.options().history_limit_tokens;
  record.base_sampling = session.options().sampling;
  record.sampler_params = session.sampler().params();
  record.random_state = session.sampler().random_state();
  record.sampling_defaults = entry.sampling_defaults;
  record.tokens_seen = cache.tokens_seen();
  record.tokens_cached = cache.tokens_cached();
  record.tokens_evicted = cache.tokens_evicted();
  record.unfed_tokens = entry.unfed_tokens;
  record.history.assign(session.history().begin(), session.history().end());
  record.created_unix_ms = entry.created_unix_ms;
  record.last_used_unix_ms = entry.last_used_unix_ms;
  record.requests = entry.requests;
  contents_.resize(cache.bytes());
  absl::Status status = cache.CopyContentsTo(contents_);
  if (status.ok()) {
    status = persistence_.store->Save(entry.id, EncodeSessionHeader(record, contents_), contents_);
  }
  entry.stored = status.ok();
  listener_->OnSessionWritten(why, entry.id, contents_.size(),
                              std::chrono::duration<double>(SteadyClock::now() - start).count(),
                              status);
  ReportStoreUsage();
  return status;
}

int SessionTable::PersistAll(StoreWrite why) {
  int written = 0;
  for (auto& [id, entry] : entries_) {
    if (!entry.busy && !entry.stored) written += Persist(entry, why).ok();
  }
  return written;
}

void SessionTable::SweepStore() {
  if (persistence_.store == nullptr || persistence_.store_ttl.count() <= 0) return;
  if (persistence_.store->RemoveWrittenBefore(UnixMillisNow() - persistence_.store_ttl.count()) >
      0) {
    ReportStoreUsage();
  }
}

void SessionTable::ReportStoreUsage() { listener_->OnStoreUsage(persistence_.store->Usage()); }

absl::StatusOr<SessionEntry*> SessionTable::Restore(const std::string& id) {
  const SteadyClock::time_point start = SteadyClock::now();
  absl::StatusOr<SessionEntry*> entry;
  making_room_ = SteadyClock::duration::zero();
  if (absl::Status leased = persistence_.store->Lease(id, persistence_.owner, persistence_.lease);
      !leased.ok()) {
    entry = leased;
  } else {
    entry = RestoreLeased(id);
    persistence_.store->Release(id, persistence_.owner);
  }
  if (!entry.ok()) {
    listener_->OnSessionRestoreFailed(id, entry.status());
    return entry;
  }
  // The restore's own time: evicting (spilling) sessions to make room counts as their writes.
  listener_->OnSessionRestored(
      id, (*entry)->session->cache().bytes(),
      std::chrono::duration<double>(SteadyClock::now() - start - making_room_).count());
  ReportStoreUsage();
  return entry;
}

absl::StatusOr<SessionEntry*> SessionTable::RestoreLeased(const std::string& id) {
  PersistentSessionStore& store = *persistence_.store;
  absl::StatusOr<std::vector<std::byte>> file = store.Load(id);
  if (!file.ok()) {
    return absl::IsNotFound(file.status())
               ? absl::NotFoundError(absl::StrCat("session_id: session ", id,
                                                  " left the session store while it was being "
                                                  "restored (another replica took it)"))
               : file.status();
  }
  // A damaged file is set aside (the id can start over) and reported.
  auto corrupt = [&](absl::string_view why) -> absl::Status {
    absl::StatusOr<std::string> moved = store.Quarantine(id);
    return absl::DataLossError(absl::StrCat(
        "session_id: session ", id,
        " cannot be restored, its file in the session store is "
        "damaged (",
        why, "); ",
        moved.ok() ? absl::StrCat("moved to ", *moved) : std::string(moved.status().message())));
  };
  absl::StatusOr<ParsedSessionFile> parsed = ParseSessionFile(*file);
  if (!parsed.ok()) return corrupt(parsed.status().message());
  const SessionRecord& record = parsed->record;
  if (record.id != id) return corrupt(absl::StrCat("it holds session ", record.id));
  if (record.model_fingerprint != persistence_.model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session_id: session ", id,
        " was saved by a server with another model: the file's "
        "model is \"",
        record.model_fingerprint, "\", this server's is \"", persistence_.model_fingerprint,
        "\"; continue it on a server with that model"));
  }
  for (const std::vector<int32_t>* tokens : {&record.unfed_tokens, &record.history}) {
    for (int32_t token : *tokens) {
      if (token < 0 || token >= persistence_.vocab_size) {
        return corrupt(absl::StrCat("token id ", token, " is outside the vocabulary"));
      }
    }
  }
  const SteadyClock::time_point room_start = SteadyClock::now();
  const absl::Status room = MakeRoom(CacheBytes(shape_, record.policy));
  making_room_ = SteadyClock::now() - room_start;
  if (!room.ok()) return room;
  absl::StatusOr<Session*> session = store_.Create(SessionOptions{
      record.policy, record.base_sampling, static_cast<size_t>(record.history_limit_tokens)});
  if (!session.ok()) return session.status();
  KvCache& cache = (*session)->cache();
  absl::Status status;
  if (cache.ContentsFormat() != record.contents_format) {
    status = absl::FailedPreconditionError(absl::StrCat(
        "session_id: session ", id, " was saved from a cache in another format: the file's is \"",
        record.contents_format, "\", this server's is \"", cache.ContentsFormat(),
        "\"; continue it on a server with the same backend"));
  } else if (cache.bytes() != parsed->cache.size()) {
    status = corrupt(absl::StrCat("its cache holds ", parsed->cache.size(), " bytes, a ",
                                  record.policy.Describe(), " cache ", cache.bytes()));
  } else if (absl::Status resumed = cache.ResumeAt(record.tokens_seen); !resumed.ok()) {
    status = corrupt(resumed.message());
  } else if (cache.tokens_cached() != record.tokens_cached ||
             cache.tokens_evicted() != record.tokens_evicted) {
    status = corrupt("its stream positions do not match its policy");
  } else {
    status = cache.CopyContentsFrom(parsed->cache);
  }
  if (!status.ok()) {
    (void)store_.Destroy((*session)->id());
    return status;
  }
  (*session)->sampler().set_params(record.sampler_params);
  (*session)->sampler().set_random_state(record.random_state);
  for (int32_t token : record.history) (*session)->Record(token);
  SessionEntry& entry = entries_[id];
  entry.id = id;
  entry.session = *session;
  entry.sampling_defaults = record.sampling_defaults;
  entry.unfed_tokens = record.unfed_tokens;
  entry.last_used = now_();
  entry.created_unix_ms = record.created_unix_ms;
  entry.last_used_unix_ms = record.last_used_unix_ms;
  entry.requests = record.requests;
  gone_.erase(id);
  // Memory holds the session now; with --session-persist turn the file stays as its crash copy.
  entry.stored = persistence_.every_turn;
  if (!persistence_.every_turn) (void)store.Remove(id);
  return &entry;
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
