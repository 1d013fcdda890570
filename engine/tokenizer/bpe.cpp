#include "engine/tokenizer/bpe.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "common/base/quote.h"
#include "engine/tokenizer/byte_level.h"

namespace sinkserve {
namespace {

bool NeverInUtf8(uint8_t byte) { return byte == 0xC0 || byte == 0xC1 || byte >= 0xF5; }

// One symbol of the word being merged; symbols form a doubly linked list over byte positions.
struct Symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool live;
};

// A merge that may apply at `pos` (the left symbol). Stale candidates are checked on pop.
struct Candidate {
  uint32_t rank;
  int32_t pos;
  int32_t result;
  // std::priority_queue is a max-heap: "less" means later, i.e. higher rank, then further right.
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(
    const absl::flat_hash_map<std::string, int32_t>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  for (int byte = 0; byte < 256; ++byte) {
    const std::string token = byte_level::EncodeBytes(std::string(1, static_cast<char>(byte)));
    auto it = vocab.find(token);
    if (it != vocab.end()) {
      model->byte_ids_[static_cast<size_t>(byte)] = it->second;
      continue;
    }
    // GPT-NeoX's vocab has no tokens for C0, C1 and F5..FF, which never occur in UTF-8; every
    // other byte must have one, or some valid text could not be encoded.
    model->byte_ids_[static_cast<size_t>(byte)] = -1;
    if (!NeverInUtf8(static_cast<uint8_t>(byte))) {
      return absl::InvalidArgumentError(
          absl::StrCat("BPE vocab lacks the byte-level token ", Quote(token), " for byte ", byte,
                       " (byte-level BPE needs one for every byte that occurs in UTF-8)"));
    }
  }
  model->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const std::string merged = left + right;
    auto left_it = vocab.find(left);
    auto right_it = vocab.find(right);
    auto merged_it = vocab.find(merged);
    for (const auto& [it, name] :
         {std::pair{left_it, &left}, std::pair{right_it, &right}, std::pair{merged_it, &merged}}) {
      if (it == vocab.end()) {
        return absl::InvalidArgumentError(absl::StrCat("BPE merge #", rank, " (", Quote(left), " ",
                                                       Quote(right), ") uses token ", Quote(*name),
                                                       ", which is not in the vocab"));
      }
    }
    model->merges_[PairKey(left_it->second, right_it->second)] =
        MergeTarget{static_cast<uint32_t>(rank), merged_it->second};
  }
  model->ignore_merges_ = ignore_merges;
  if (ignore_merges) {
    for (const auto& [token, id] : vocab) {
      if (auto bytes = byte_level::DecodeAlphabetToken(token)) model->raw_vocab_[*bytes] = id;
    }
  }
  return model;
}

void BpeModel::Encode(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.size() > kMaxCachedBytes) {
    EncodeUncached(word, ids);
    return;
  }
  {
    absl::ReaderMutexLock lock(&cache_mutex_);
    if (auto it = cache_.find(absl::string_view(word.data(), word.size())); it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids.size();
  EncodeUncached(word, ids);
  absl::MutexLock lock(&cache_mutex_);
  if (cache_.size() < kCacheCapacity) {
    cache_.try_emplace(std::string(word), ids.begin() + static_cast<std::ptrdiff_t>(first),
                       ids.end());
  }
}

void BpeModel::EncodeUncached(std::string_view word, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    if (auto it = raw_vocab_.find(absl::string_view(word.data(), word.size()));
        it != raw_vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  if (word.size() == 1) {
    if (const int32_t id = byte_ids_[static_cast<uint8_t>(word[0])]; id >= 0) ids.push_back(id);
    return;
  }
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (const char byte : word) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(byte)];
    // A byte without a token is dropped, as HF drops characters missing from the vocab when
    // there is no unk_token. Unreachable from Tokenizer::Encode, which only passes UTF-8.
    if (id < 0) continue;
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, index - 1, index + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  const auto n = static_cast<int32_t>(symbols.size());
  std::vector<Candidate> heap_storage;
  heap_storage.reserve(static_cast<size_t>(n));
  std::priority_queue<Candidate> queue(std::less<Candidate>(), std::move(heap_storage));
  const auto push_if_mergeable = [&](int32_t pos) {
    const Symbol& left = symbols[static_cast<size_t>(pos)];
    if (left.next < 0) return;
    if (const MergeTarget* merge = FindMerge(left.id, symbols[static_cast<size_t>(left.next)].id)) {
      queue.push(Candidate{merge->rank, pos, merge->result});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_if_mergeable(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (!left.live || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    // The pair at `pos` may have changed since the candidate was queued. A different pair can
    // never produce the same result token (it would span different bytes), so comparing the
    // result is enough, and it is the check HF makes.
    const MergeTarget* merge = FindMerge(left.id, right.id);
    if (merge == nullptr || merge->result != top.result) continue;
    left.id = top.result;
    right.live = false;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = top.pos;
    if (left.prev >= 0) push_if_mergeable(left.prev);
    push_if_mergeable(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
    ids.push_back(symbols[static_cast<size_t>(i)].id);
  }
}

}  // namespace sinkserve
