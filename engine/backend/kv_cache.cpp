#include "engine/backend/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sinkserve {

KvCache::KvCache(const KvShape& shape, int capacity_tokens, const KvStorageFactory& storage)
    : shape_(shape), capacity_tokens_(capacity_tokens) {
  if (storage) {
    storage_ = storage(capacity_tokens);
  } else {
    data_.resize(static_cast<size_t>(shape.num_layers) * 2 * shape.num_heads * capacity_tokens *
                 shape.head_dim);
  }
}

size_t KvCache::Offset(int layer, int head, int kind) const {
  const size_t head_block = static_cast<size_t>(capacity_tokens_) * shape_.head_dim;
  return ((static_cast<size_t>(layer) * 2 + kind) * shape_.num_heads + head) * head_block;
}

std::string KvCache::ContentsFormat() const {
  return storage_ != nullptr ? storage_->format()
                             : "host fp32 [layers][2][heads][capacity][head_dim]";
}

absl::Status KvCache::CopyContentsTo(std::span<std::byte> out) const {
  if (out.size() != bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache contents: ", out.size(), " bytes given, the cache holds ", bytes()));
  }
  if (storage_ != nullptr) return storage_->CopyToHost(out);
  std::memcpy(out.data(), data_.data(), out.size());
  return absl::OkStatus();
}

absl::Status KvCache::CopyContentsFrom(std::span<const std::byte> in) {
  if (in.size() != bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache contents: ", in.size(), " bytes given, the cache holds ", bytes()));
  }
  if (storage_ != nullptr) return storage_->CopyFromHost(in);
  std::memcpy(data_.data(), in.data(), in.size());
  return absl::OkStatus();
}

DenseKvCache::DenseKvCache(const KvShape& shape, int capacity_tokens,
                           const KvStorageFactory& storage)
    : KvCache(shape, capacity_tokens, storage) {}

std::string DenseKvCache::Describe() const {
  return absl::StrCat("dense (", capacity_tokens(), " tokens)");
}

absl::Status DenseKvCache::BeginStep(int n_tokens) {
  if (n_tokens <= 0) return absl::InvalidArgumentError("a step needs at least one token");
  if (cached_ + n_tokens > capacity_tokens()) {
    return absl::OutOfRangeError(absl::StrCat(
        "dense KV cache is full: it holds ", capacity_tokens(), " tokens, ", cached_,
        " are cached and ", n_tokens, " more were given; use a streaming cache (sink + window) "
        "for unbounded streams or a larger dense capacity"));
  }
  step_tokens_ = n_tokens;
  return absl::OkStatus();
}

void DenseKvCache::Visible(int i, std::vector<KvSpan>* spans) const {
  spans->clear();
  spans->push_back(KvSpan{0, cached_ + i + 1, cached_ + i, /*key_rank_begin=*/-1});
}

void DenseKvCache::EndStep() {
  cached_ += step_tokens_;
  tokens_seen_ += step_tokens_;
  step_tokens_ = 0;
}

void DenseKvCache::Reset() {
  cached_ = 0;
  step_tokens_ = 0;
  tokens_seen_ = 0;
}

absl::Status DenseKvCache::ResumeAt(int64_t tokens_seen) {
  if (tokens_seen < 0 || tokens_seen > capacity_tokens()) {
    return absl::OutOfRangeError(absl::StrCat("a dense cache of ", capacity_tokens(),
                                              " tokens cannot have seen ", tokens_seen));
  }
  cached_ = static_cast<int>(tokens_seen);
  tokens_seen_ = tokens_seen;
  step_tokens_ = 0;
  return absl::OkStatus();
}

StreamingKvCache::StreamingKvCache(const KvShape& shape, int sink_tokens, int window_tokens,
                                   const KvStorageFactory& storage)
    : KvCache(shape, sink_tokens + window_tokens + kStreamingStepTokens, storage),
      sink_tokens_(sink_tokens),
      window_tokens_(window_tokens),
      window_begin_(sink_tokens) {}

std::string StreamingKvCache::Describe() const {
  return absl::StrCat("streaming (sink ", sink_tokens_, ", window ", window_tokens_, ")");
}

int StreamingKvCache::tokens_cached() const {
  const int64_t sinks = std::min<int64_t>(tokens_seen_, sink_tokens_);
  const int64_t window = std::max<int64_t>(0, tokens_seen_ - window_begin_);
  return static_cast<int>(sinks + window);
}

int64_t StreamingKvCache::tokens_evicted() const { return tokens_seen_ - tokens_cached(); }

int StreamingKvCache::MaxStepTokens() const {
  return static_cast<int>(ring_slots() + window_begin_ - tokens_seen_);
}

int StreamingKvCache::SlotOf(int64_t stream_position) const {
  if (stream_position < sink_tokens_) return static_cast<int>(stream_position);
  return sink_tokens_ + static_cast<int>((stream_position - sink_tokens_) % ring_slots());
}

absl::Status StreamingKvCache::BeginStep(int n_tokens) {
  if (n_tokens <= 0) return absl::InvalidArgumentError("a step needs at least one token");
  if (n_tokens > MaxStepTokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a streaming step of ", n_tokens, " tokens does not fit the ring; at most ",
        MaxStepTokens(), " fit exactly (split the prompt with MaxStepTokens())"));
  }
  step_tokens_ = n_tokens;
  return absl::OkStatus();
}

int StreamingKvCache::NewSlot(int i) const { return SlotOf(tokens_seen_ + i); }

void StreamingKvCache::Visible(int i, std::vector<KvSpan>* spans) const {
  spans->clear();
  const int64_t t = tokens_seen_ + i;  // stream position of the new token
  // Sinks: the first min(S, t+1) tokens, ranks 0.. in place.
  const int sinks = static_cast<int>(std::min<int64_t>(sink_tokens_, t + 1));
  // Window: stream positions [start, t], ranks continuing after the sinks; start is where the
  // window of token t begins in the one-by-one order (the step's earlier tokens may already
  // have pushed it past window_begin_).
  const int64_t start = std::max<int64_t>(window_begin_, t - window_tokens_);
  const int64_t query_rank = t < sink_tokens_ ? t : sink_tokens_ + (t - start);
  if (sinks > 0) spans->push_back(KvSpan{0, sinks, query_rank, 0});
  if (t < sink_tokens_) return;
  int64_t position = start;
  int64_t rank = sink_tokens_;
  while (position <= t) {
    // A contiguous run of ring slots: up to the end of the ring or of the window.
    const int slot = SlotOf(position);
    const int64_t ring_end = sink_tokens_ + ring_slots();
    const int64_t run = std::min<int64_t>(t - position + 1, ring_end - slot);
    spans->push_back(KvSpan{slot, static_cast<int>(run), query_rank, rank});
    position += run;
    rank += run;
  }
}

void StreamingKvCache::EndStep() {
  tokens_seen_ += step_tokens_;
  step_tokens_ = 0;
  // Evict the oldest non-sinks beyond the window: only the boundary moves.
  window_begin_ = std::max<int64_t>(window_begin_, tokens_seen_ - window_tokens_);
}

void StreamingKvCache::Reset() {
  tokens_seen_ = 0;
  step_tokens_ = 0;
  window_begin_ = sink_tokens_;
}

absl::Status StreamingKvCache::ResumeAt(int64_t tokens_seen) {
  if (tokens_seen < 0) {
    return absl::OutOfRangeError(absl::StrCat("a stream cannot have seen ", tokens_seen, " tokens"));
  }
  // EndStep keeps window_begin_ = max(S, tokens_seen − W) (it starts at S and only follows the
  // stream), so the position alone restores it.
  tokens_seen_ = tokens_seen;
  step_tokens_ = 0;
  window_begin_ = std::max<int64_t>(sink_tokens_, tokens_seen - window_tokens_);
  return absl::OkStatus();
}

std::vector<int64_t> StreamingKvCache::CachedStreamPositions() const {
  std::vector<int64_t> positions;
  for (int64_t t = 0; t < std::min<int64_t>(tokens_seen_, sink_tokens_); ++t) positions.push_back(t);
  for (int64_t t = window_begin_; t < tokens_seen_; ++t) positions.push_back(t);
  return positions;
}

absl::Status CachePolicy::Validate() const {
  if (kind == Kind::kCachePolicyDense) {
    if (dense_capacity_tokens < 0) {
      return absl::InvalidArgumentError("dense_capacity_tokens must be >= 0 (0 = model context)");
    }
    return absl::OkStatus();
  }
  if (sink_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sink_tokens must be >= 0, got ", sink_tokens));
  }
  if (window_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("window_tokens must be >= 1, got ", window_tokens));
  }
  if (static_cast<int64_t>(sink_tokens) + window_tokens > (1 << 24)) {
    return absl::InvalidArgumentError("sink_tokens + window_tokens must be <= 16777216");
  }
  return absl::OkStatus();
}

std::string CachePolicy::Describe() const {
  if (kind == Kind::kCachePolicyDense) {
    return dense_capacity_tokens > 0 ? absl::StrCat("dense (", dense_capacity_tokens, " tokens)")
                                     : "dense (model context)";
  }
  return absl::StrCat("streaming (sink ", sink_tokens, ", window ", window_tokens, ")");
}

int CachePolicy::CapacityTokens(int max_positions) const {
  if (kind == Kind::kCachePolicyDense) {
    return dense_capacity_tokens > 0 ? dense_capacity_tokens : max_positions;
  }
  return sink_tokens + window_tokens + kStreamingStepTokens;
}

std::unique_ptr<KvCache> NewKvCache(const KvShape& shape, const CachePolicy& policy,
                                    int max_positions, const KvStorageFactory& storage) {
  if (policy.kind == CachePolicy::Kind::kCachePolicyDense) {
    return std::make_unique<DenseKvCache>(shape, policy.CapacityTokens(max_positions), storage);
  }
  return std::make_unique<StreamingKvCache>(shape, policy.sink_tokens, policy.window_tokens,
                                            storage);
}

}  // namespace sinkserve
