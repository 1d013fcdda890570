// BpeModel: byte-level BPE over one pre-token, as HF's `models::bpe::BPE` does it.
//
// A pre-token starts as one symbol per byte (the vocab's byte-level token for that byte). Then,
// repeatedly, the adjacent pair with the lowest merge rank (leftmost on ties) is replaced by its
// merge result, until no adjacent pair has a merge. HF runs this with a priority queue of
// (rank, position), and so does this class, so a hostile 1 MB pre-token costs O(n log n).
//
// Results for pre-tokens up to kMaxCachedBytes are cached (HF caches too); the cache is guarded
// by a mutex so Encode may be called from several threads at once.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace sinkserve {

class BpeModel {
 public:
  // `vocab` maps token strings (byte-level alphabet, as in tokenizer.json) to ids; `merges` are
  // (left, right) token strings in rank order (rank = index; a repeated pair keeps the last
  // rank, as HF's map does). Refused: a byte that occurs in UTF-8 but has no byte-level token, a
  // merge naming a token missing from the vocab, or whose concatenation is missing.
  // With `ignore_merges`, a pre-token that is itself in the vocab maps straight to that token.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(
      const absl::flat_hash_map<std::string, int32_t>& vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges);

  // Appends the ids of one pre-token given as raw bytes (non-empty). Bytes that have no token
  // (only C0, C1 and F5..FF may lack one, and they never occur in UTF-8) are dropped, like HF.
  void Encode(std::string_view word, std::vector<int32_t>& ids) const;
  // The same without touching the cache (tests and benchmarks).
  void EncodeUncached(std::string_view word, std::vector<int32_t>& ids) const;

  static constexpr size_t kMaxCachedBytes = 256;
  static constexpr size_t kCacheCapacity = 1 << 16;  // entries; beyond it, nothing new is cached

 private:
  struct MergeTarget {
    uint32_t rank;
    int32_t result;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }
  const MergeTarget* FindMerge(int32_t left, int32_t right) const {
    auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  BpeModel() = default;

  std::array<int32_t, 256> byte_ids_{};                // raw byte -> its single-byte token
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;  // PairKey(left, right) -> merge
  bool ignore_merges_ = false;
  absl::flat_hash_map<std::string, int32_t> raw_vocab_;  // raw bytes -> id (ignore_merges only)

  mutable absl::Mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_
      ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace sinkserve
