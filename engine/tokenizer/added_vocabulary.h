// AddedVocabulary: finds added tokens (tokenizer.json "added_tokens") in text, the first step of
// HF's encode. HF keeps two such sets: tokens with `normalized: false` are matched on the raw
// text, those with `normalized: true` (Pythia's 23 whitespace runs) on each normalized piece;
// the Tokenizer owns one AddedVocabulary per set.
//
// Matching follows HF's AddedVocabulary::find_matches: an Aho-Corasick scan with LeftmostLongest
// semantics (the earliest match start wins, then the longest pattern there; scanning resumes at
// the end of the raw match), then per token:
//   single_word: the match is dropped unless not preceded and not followed by a \w character;
//   lstrip:      the match grows left over the whitespace before it (not into an earlier split);
//   rstrip:      the match grows right over the whitespace after it.
// \w and \s are the Rust regex crate's (Unicode) classes, as in HF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace sinkserve {

struct AddedTokenPattern {
  std::string content;  // what is matched (already normalized for the normalized set)
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
};

class AddedVocabulary {
 public:
  // A piece of the sentence: an added token (id >= 0) or ordinary text (id == kNoToken).
  struct Split {
    size_t begin;
    size_t end;
    int32_t id;
  };
  static constexpr int32_t kNoToken = -1;

  // Patterns with empty content are ignored (HF ignores them too).
  explicit AddedVocabulary(std::vector<AddedTokenPattern> patterns);

  bool empty() const { return patterns_.empty(); }

  // Replaces `splits` with HF's splits of `sentence` (valid UTF-8): ordinary pieces and added
  // tokens in order, covering the sentence. (With rstrip, HF can let a token's split overlap the
  // next match; that quirk is reproduced, not repaired.)
  void FindMatches(std::string_view sentence, std::vector<Split>& splits) const;

 private:
  struct Match {
    size_t begin;
    size_t end;
    int32_t pattern;
  };
  // Leftmost-longest match starting at or after `from`; pattern < 0 when there is none.
  Match NextMatch(std::string_view text, size_t from) const;
  int32_t Child(int32_t node, uint8_t byte) const {
    auto it = children_.find((static_cast<uint64_t>(node) << 8) | byte);
    return it == children_.end() ? -1 : it->second;
  }

  std::vector<AddedTokenPattern> patterns_;
  // Trie over pattern bytes: node 0 is the root; children_[(node << 8) | byte] = child.
  absl::flat_hash_map<uint64_t, int32_t> children_;
  std::vector<int32_t> terminal_;  // [nodes]: index of the pattern ending there, or -1
  bool first_byte_[256] = {};      // bytes that start some pattern, to skip ahead quickly
};

}  // namespace sinkserve
