#include "engine/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace sinkserve {

KvCache::KvCache(const KvShape& shape, int capacity_tokens)
    : shape_(shape),
      capacity_tokens_(capacity_tokens),
      data_(static_cast<size_t>(shape.num_layers) * 2 * shape.num_heads * capacity_tokens *
            shape.head_dim) {}

size_t KvCache::Offset(int layer, int head, int kind) const {
  const size_t head_block = static_cast<size_t>(capacity_tokens_) * shape_.head_dim;
  return ((static_cast<size_t>(layer) * 2 + kind) * shape_.num_heads + head) * head_block;
}

DenseKvCache::DenseKvCache(const KvShape& shape, int capacity_tokens)
    : KvCache(shape, capacity_tokens) {}

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
  spans->push_back(KvSpan{0, cached_ + i + 1, cached_ + i});
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

}  // namespace sinkserve
