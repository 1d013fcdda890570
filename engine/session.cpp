#include "engine/session.h"

#include "absl/strings/str_cat.h"

namespace sinkserve {

Session::Session(uint64_t id, std::unique_ptr<KvCache> cache, const SessionOptions& options)
    : id_(id), cache_(std::move(cache)), options_(options), sampler_(options.sampling) {}

absl::Status Session::Feed(Backend& backend, std::span<const int32_t> tokens,
                           std::span<float> logits) {
  if (absl::Status status = FeedTokens(backend, tokens, *cache_, logits); !status.ok()) {
    return status;
  }
  for (int32_t token : tokens) Record(token);
  return absl::OkStatus();
}

void Session::Record(int32_t token) {
  history_.push_back(token);
  while (history_.size() > options_.history_limit_tokens) history_.pop_front();
}

void Session::Reset() {
  cache_->Reset();
  history_.clear();
  sampler_ = Sampler(options_.sampling);
}

absl::StatusOr<Session*> SessionStore::Create(const SessionOptions& options) {
  if (absl::Status status = options.policy.Validate(); !status.ok()) return status;
  if (absl::Status status = options.sampling.Validate(); !status.ok()) return status;
  std::unique_ptr<KvCache> cache;
  auto free = free_caches_.find(options.policy.Describe());
  if (free != free_caches_.end() && !free->second.empty()) {
    cache = std::move(free->second.back());
    free->second.pop_back();
    cache->Reset();
  } else {
    absl::StatusOr<std::unique_ptr<KvCache>> fresh = backend_.NewCache(options.policy);
    if (fresh.status().code() == absl::StatusCode::kResourceExhausted && !free_caches_.empty()) {
      // The device or host is out of memory: the caches kept for reuse go back, then retry.
      ReleaseFreeCaches();
      fresh = backend_.NewCache(options.policy);
    }
    if (!fresh.ok()) return fresh.status();
    cache = std::move(*fresh);
  }
  const uint64_t id = next_id_++;
  auto session = std::make_unique<Session>(id, std::move(cache), options);
  Session* raw = session.get();
  sessions_.emplace(id, std::move(session));
  return raw;
}

Session* SessionStore::Find(uint64_t id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

absl::Status SessionStore::Destroy(uint64_t id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(absl::StrCat("session ", id, " does not exist"));
  }
  const std::string key = it->second->options().policy.Describe();
  free_caches_[key].push_back(it->second->TakeCache());
  sessions_.erase(it);
  return absl::OkStatus();
}

uint64_t SessionStore::cache_bytes() const {
  uint64_t total = 0;
  for (const auto& [id, session] : sessions_) total += session->cache().bytes();
  return total;
}

uint64_t SessionStore::free_cache_bytes() const {
  uint64_t total = 0;
  for (const auto& [key, caches] : free_caches_) {
    for (const auto& cache : caches) total += cache->bytes();
  }
  return total;
}

}  // namespace sinkserve
