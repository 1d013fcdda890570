// Sessions: one conversation's stream state — its KV cache, a bounded token history and its
// sampler (with its random stream). Continuing a session appends to the same stream
// (multi-turn chat, as StreamingLLM's streaming chat does).
//
// SessionStore owns the sessions of one engine. A destroyed session's cache is kept on a free
// list and handed to the next session with the same policy, so churn does not allocate.
// Not thread-safe: the engine's scheduler thread owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/backend/kv_cache.h"
#include "engine/sampler.h"

namespace sinkserve {

struct SessionOptions {
  CachePolicy policy;
  SamplingParams sampling;
  size_t history_limit_tokens = 4096;  // tokens kept for the repetition penalty and stats
};

class Session {
 public:
  Session(uint64_t id, std::unique_ptr<KvCache> cache, const SessionOptions& options);

  uint64_t id() const { return id_; }
  KvCache& cache() { return *cache_; }
  const KvCache& cache() const { return *cache_; }
  Sampler& sampler() { return sampler_; }
  const Sampler& sampler() const { return sampler_; }
  const SessionOptions& options() const { return options_; }
  // The most recent tokens of the stream (at most history_limit_tokens), oldest first.
  const std::deque<int32_t>& history() const { return history_; }

  // Appends tokens to the stream: runs them through the model (exact chunks) and records
  // them. `logits` ([vocab]) receives the last token's logits.
  absl::Status Feed(Backend& backend, std::span<const int32_t> tokens, std::span<float> logits);
  // Records a token that the caller ran through the model itself (e.g. in a batched step).
  void Record(int32_t token);
  // Forgets the stream; the cache memory stays.
  void Reset();

 private:
  friend class SessionStore;
  std::unique_ptr<KvCache> TakeCache() { return std::move(cache_); }

  uint64_t id_;
  std::unique_ptr<KvCache> cache_;
  SessionOptions options_;
  Sampler sampler_;
  std::deque<int32_t> history_;
};

class SessionStore {
 public:
  explicit SessionStore(const Backend& backend) : backend_(backend) {}

  // INVALID_ARGUMENT naming the field when the policy or sampling parameters are bad.
  absl::StatusOr<Session*> Create(const SessionOptions& options);
  Session* Find(uint64_t id);  // nullptr when unknown
  absl::Status Destroy(uint64_t id);  // NOT_FOUND when unknown

  size_t size() const { return sessions_.size(); }
  uint64_t cache_bytes() const;         // held by live sessions
  uint64_t free_cache_bytes() const;    // kept for reuse
  // Frees the caches kept for reuse (when memory is needed for a cache of another policy).
  void ReleaseFreeCaches() { free_caches_.clear(); }

 private:
  const Backend& backend_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;
  // Caches of destroyed sessions, by policy (CachePolicy::Describe()), ready for reuse.
  std::map<std::string, std::vector<std::unique_ptr<KvCache>>> free_caches_;
};

}  // namespace sinkserve
