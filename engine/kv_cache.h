// KvCache: the keys and values a session has cached, and the policy that decides which tokens
// stay (DESIGN §4). The forward pass talks to a cache only through this interface, so dense
// and streaming (sink + window) policies share one attention code path.
//
// A step appends n new tokens: BeginStep(n) reserves their slots, the forward writes each new
// token's key/value into NewSlot(i) and attends Visible(i), then EndStep() commits (and, for
// the streaming policy, evicts). Memory is allocated once, at construction: it never grows.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace sinkserve {

// The geometry of a model's cache.
struct KvShape {
  int num_layers = 0;
  int num_heads = 0;
  int head_dim = 0;
};

// A run of cache slots that a query attends, and the rotary position the query takes against
// them. Keys are stored rotated at their own position; a policy that re-ranks positions (the
// streaming cache) states per span the query position that gives the same relative distance.
struct KvSpan {
  int begin_slot = 0;
  int num_slots = 0;
  int64_t query_position = 0;
};

class KvCache {
 public:
  KvCache(const KvShape& shape, int capacity_tokens);
  virtual ~KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Reserves slots for n new tokens. OUT_OF_RANGE when they cannot fit (dense cache full).
  virtual absl::Status BeginStep(int n_tokens) = 0;
  // Slot and rotary position of the key of new token i of the current step.
  virtual int NewSlot(int i) const = 0;
  virtual int64_t NewKeyPosition(int i) const = 0;
  // The slots new token i attends — every token before it that is cached, and itself.
  virtual void Visible(int i, std::vector<KvSpan>* spans) const = 0;
  // Commits the step's tokens.
  virtual void EndStep() = 0;
  // Forgets every token; the memory stays allocated for reuse.
  virtual void Reset() = 0;

  virtual int tokens_cached() const = 0;  // tokens whose keys are held now
  int64_t tokens_seen() const { return tokens_seen_; }  // tokens ever appended
  int capacity_tokens() const { return capacity_tokens_; }
  const KvShape& shape() const { return shape_; }
  uint64_t bytes() const { return data_.size() * sizeof(float); }

  // Keys / values of one layer and head: [capacity_tokens][head_dim] fp32.
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
  // [num_layers][2 (keys, values)][num_heads][capacity_tokens][head_dim], fp32.
  std::vector<float> data_;
};

// Dense policy: nothing is evicted, positions are absolute; going past capacity is
// OUT_OF_RANGE, never a silent truncation.
class DenseKvCache final : public KvCache {
 public:
  DenseKvCache(const KvShape& shape, int capacity_tokens);

  absl::Status BeginStep(int n_tokens) override;
  int NewSlot(int i) const override { return cached_ + i; }
  int64_t NewKeyPosition(int i) const override { return cached_ + i; }
  void Visible(int i, std::vector<KvSpan>* spans) const override;
  void EndStep() override;
  void Reset() override;
  int tokens_cached() const override { return cached_; }

 private:
  int cached_ = 0;
  int step_tokens_ = 0;
};

}  // namespace sinkserve
