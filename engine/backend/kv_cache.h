// KvCache: the keys and values a session has cached, and the policy that decides which tokens
// stay (docs/cache-semantics.md). The forward pass talks to a cache only through this interface, so
// dense and streaming (sink + window) policies share one attention code path.
//
// A step appends n new tokens: BeginStep(n) reserves their slots, the forward writes each new
// token's key/value into NewSlot(i) and attends Visible(i), then EndStep() commits (and, for
// the streaming policy, evicts). Memory is allocated once, at construction: it never grows.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sinkserve {

// The geometry of a model's cache.
struct KvShape {
  int num_layers = 0;
  int num_heads = 0;
  int head_dim = 0;
};

// A policy splits what one token attends into at most this many spans (sinks + a ring that
// wraps once: see StreamingKvCache::Visible).
inline constexpr int kMaxVisibleSpans = 4;

// Keys and values held somewhere other than host memory (a device backend's pool). The cache
// owns it and frees it with itself; the backend that made it knows its layout.
class KvStorage {
 public:
  virtual ~KvStorage() = default;
  virtual uint64_t bytes() const = 0;
  // The layout in words ("cuda fp16 [layers][2][heads][capacity][head_dim]"): a saved cache
  // loads only into storage of the same format.
  virtual std::string format() const = 0;
  // Copies all bytes() out to host memory / in from it (`host` is exactly bytes() long).
  virtual absl::Status CopyToHost(std::span<std::byte> host) const = 0;
  virtual absl::Status CopyFromHost(std::span<const std::byte> host) = 0;
};

// Makes the storage of a cache of `capacity_tokens`; empty = host fp32 arrays.
using KvStorageFactory = std::function<std::unique_ptr<KvStorage>(int capacity_tokens)>;

// A run of cache slots that a query attends, with the rotary positions to use.
// The query is rotated at query_position. Keys are either stored already rotated
// (key_rank_begin < 0: the dense cache, whose positions never change) or stored un-rotated and
// rotated on the fly: key j of the span at position key_rank_begin + j (the streaming cache,
// whose positions are ranks that shift as tokens are evicted — docs/cache-semantics.md).
struct KvSpan {
  int begin_slot = 0;
  int num_slots = 0;
  int64_t query_position = 0;
  int64_t key_rank_begin = -1;
};

class KvCache {
 public:
  KvCache(const KvShape& shape, int capacity_tokens, const KvStorageFactory& storage);
  virtual ~KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // The most tokens the next step may hold and stay exact (≥ 1 unless a dense cache is full).
  virtual int MaxStepTokens() const = 0;
  // Reserves slots for n new tokens. OUT_OF_RANGE when they cannot fit (dense cache full),
  // INVALID_ARGUMENT when n > MaxStepTokens().
  virtual absl::Status BeginStep(int n_tokens) = 0;
  // Slot of the key/value of new token i of the current step.
  virtual int NewSlot(int i) const = 0;
  // Rotary position at which new token i's key is stored, or −1 when keys are stored
  // un-rotated (then Visible() gives their ranks).
  virtual int64_t NewKeyPosition(int i) const = 0;
  // The slots new token i attends — every token before it that is cached, and itself.
  virtual void Visible(int i, std::vector<KvSpan>* spans) const = 0;
  // Commits the step's tokens.
  virtual void EndStep() = 0;
  // Forgets every token; the memory stays allocated for reuse.
  virtual void Reset() = 0;
  // Sets the stream position of a cache whose contents were just copied in (CopyContentsFrom)
  // from a cache of the same policy that had seen `tokens_seen` tokens: every other position
  // (what is cached, what was evicted) follows from it. OUT_OF_RANGE when this cache cannot
  // have seen that many (a dense cache past its capacity, a negative count).
  virtual absl::Status ResumeAt(int64_t tokens_seen) = 0;

  virtual int tokens_cached() const = 0;  // tokens whose keys are held now
  virtual int64_t tokens_evicted() const { return 0; }
  virtual std::string Describe() const = 0;  // "dense (2048 tokens)", "streaming (sink 4, window 256)"
  int64_t tokens_seen() const { return tokens_seen_; }  // tokens ever appended
  int capacity_tokens() const { return capacity_tokens_; }
  const KvShape& shape() const { return shape_; }
  uint64_t bytes() const {
    return storage_ != nullptr ? storage_->bytes() : data_.size() * sizeof(float);
  }
  // The device storage, or nullptr for a host cache.
  KvStorage* storage() const { return storage_.get(); }
  // The layout of the bytes the cache holds ("host fp32 [layers][2][heads][capacity][head_dim]",
  // or the storage's format).
  std::string ContentsFormat() const;
  // Every byte the cache holds, exactly as held (bytes() of them), to / from host memory.
  absl::Status CopyContentsTo(std::span<std::byte> out) const;
  absl::Status CopyContentsFrom(std::span<const std::byte> in);

  // Keys / values of one layer and head of a host cache: [capacity_tokens][head_dim] fp32.
  float* keys(int layer, int head) { return data_.data() + Offset(layer, head, 0); }
  float* values(int layer, int head) { return data_.data() + Offset(layer, head, 1); }
  const float* keys(int layer, int head) const { return data_.data() + Offset(layer, head, 0); }
  const float* values(int layer, int head) const {
    return data_.data() + Offset(layer, head, 1);
  }

 protected:
  int64_t tokens_seen_ = 0;

 private:
  size_t Offset(int layer, int head, int kind) const;

  KvShape shape_;
  int capacity_tokens_;
  // Host caches: [num_layers][2 (keys, values)][num_heads][capacity_tokens][head_dim], fp32.
  std::vector<float> data_;
  std::unique_ptr<KvStorage> storage_;  // device caches (then data_ is empty)
};

// Dense policy: nothing is evicted, positions are absolute; going past capacity is
// OUT_OF_RANGE, never a silent truncation.
class DenseKvCache final : public KvCache {
 public:
  DenseKvCache(const KvShape& shape, int capacity_tokens, const KvStorageFactory& storage = {});

  int MaxStepTokens() const override { return capacity_tokens() - cached_; }
  absl::Status BeginStep(int n_tokens) override;
  int NewSlot(int i) const override { return cached_ + i; }
  int64_t NewKeyPosition(int i) const override { return cached_ + i; }
  void Visible(int i, std::vector<KvSpan>* spans) const override;
  void EndStep() override;
  void Reset() override;
  absl::Status ResumeAt(int64_t tokens_seen) override;
  int tokens_cached() const override { return cached_; }
  std::string Describe() const override;

 private:
  int cached_ = 0;
  int step_tokens_ = 0;
};

// Streaming policy (StreamingLLM, docs/cache-semantics.md): the first `sink_tokens` tokens ever
// seen and the `window_tokens` most recent; positions are ranks within the cache; after each step
// the oldest non-sinks are evicted. Keys are stored un-rotated and rotated at their current rank
// when attended, exactly as the StreamingLLM reference re-rotates them.
//
// Memory: [0, S) hold the sinks; [S, S+R) are a ring of R = W + kStreamingStepTokens slots
// indexed by stream position (slot = S + (t − S) mod R), so eviction moves nothing: it only
// advances `window_begin_`.
//
// A step of n tokens is exact (equal to feeding them one by one): token t of the step attends
// the sinks and stream positions [max(window_begin_, t − W), t] — its own window, as if the
// tokens before it had been fed and evicted one at a time — at the ranks it would have had.
// That needs every position from the step's oldest window start to its last token in the
// ring: n ≤ R + window_begin_ − tokens_seen, which MaxStepTokens() reports (≥ the spare
// slots, kStreamingStepTokens, once the window is full). The spare slots cost
// kStreamingStepTokens / W more memory and let a long prompt go in chunks instead of one token
// per step.
inline constexpr int kStreamingStepTokens = 64;

class StreamingKvCache final : public KvCache {
 public:
  StreamingKvCache(const KvShape& shape, int sink_tokens, int window_tokens,
                   const KvStorageFactory& storage = {});

  int MaxStepTokens() const override;
  absl::Status BeginStep(int n_tokens) override;
  int NewSlot(int i) const override;
  int64_t NewKeyPosition(int) const override { return -1; }
  void Visible(int i, std::vector<KvSpan>* spans) const override;
  void EndStep() override;
  void Reset() override;
  absl::Status ResumeAt(int64_t tokens_seen) override;
  int tokens_cached() const override;
  int64_t tokens_evicted() const override;
  std::string Describe() const override;

  int sink_tokens() const { return sink_tokens_; }
  int window_tokens() const { return window_tokens_; }
  // Stream positions of the cached tokens in cache (rank) order: sinks, then the window.
  std::vector<int64_t> CachedStreamPositions() const;

 private:
  int SlotOf(int64_t stream_position) const;
  int64_t ring_slots() const { return window_tokens_ + kStreamingStepTokens; }

  int sink_tokens_;
  int window_tokens_;
  int64_t window_begin_ = 0;  // stream position of the oldest cached non-sink (≥ S)
  int step_tokens_ = 0;
};

// Which cache a session gets (docs/cache-semantics.md). Default: streaming, 4 sinks + 256 window.
struct CachePolicy {
  enum class Kind { kCachePolicyDense, kCachePolicyStreaming };
  Kind kind = Kind::kCachePolicyStreaming;
  int sink_tokens = 4;
  int window_tokens = 256;
  int dense_capacity_tokens = 0;  // 0 = the model's max_position_embeddings

  absl::Status Validate() const;  // INVALID_ARGUMENT naming the field
  std::string Describe() const;
  // Slots a cache of this policy holds; `max_positions` is a dense cache's default.
  int CapacityTokens(int max_positions) const;
};

// A cache of `shape` under `policy`; `max_positions` bounds a dense cache's default capacity.
std::unique_ptr<KvCache> NewKvCache(const KvShape& shape, const CachePolicy& policy,
                                    int max_positions, const KvStorageFactory& storage = {});

}  // namespace sinkserve
