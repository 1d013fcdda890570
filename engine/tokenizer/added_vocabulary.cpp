#include "engine/tokenizer/added_vocabulary.h"

#include <algorithm>
#include <utility>

#include "engine/tokenizer/unicode.h"
#include "common/base/utf8.h"

namespace sinkserve {
namespace {

bool HasFlag(char32_t cp, uint8_t flag) { return (unicode::CharFlags(cp) & flag) != 0; }

// HF's `\w$` on text[0, end): does the text before `end` end with a word character?
bool EndsWithWord(std::string_view text, size_t end) {
  if (end == 0) return false;
  size_t pos = utf8::PreviousBoundary(text, end);
  return HasFlag(utf8::DecodeValid(text, pos), unicode::kCharFlagWord);
}

// HF's `^\w` on text[begin, size).
bool StartsWithWord(std::string_view text, size_t begin) {
  if (begin >= text.size()) return false;
  return HasFlag(utf8::DecodeValid(text, begin), unicode::kCharFlagWord);
}

// HF's `\s*$` on text[0, end): where the run of whitespace ending at `end` begins.
size_t WhitespaceRunStartBefore(std::string_view text, size_t end) {
  while (end > 0) {
    size_t start = utf8::PreviousBoundary(text, end);
    size_t pos = start;
    if (!HasFlag(utf8::DecodeValid(text, pos), unicode::kCharFlagRustSpace)) break;
    end = start;
  }
  return end;
}

// HF's `^\s*` on text[begin, size): where the run of whitespace starting at `begin` ends.
size_t WhitespaceRunEndAfter(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t next = begin;
    if (!HasFlag(utf8::DecodeValid(text, next), unicode::kCharFlagRustSpace)) break;
    begin = next;
  }
  return begin;
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedTokenPattern> patterns) {
  terminal_.push_back(-1);  // root
  for (AddedTokenPattern& pattern : patterns) {
    if (pattern.content.empty()) continue;
    const auto index = static_cast<int32_t>(patterns_.size());
    int32_t node = 0;
    for (char c : pattern.content) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
      auto [it, inserted] = children_.try_emplace(key, static_cast<int32_t>(terminal_.size()));
      if (inserted) terminal_.push_back(-1);
      node = it->second;
    }
    // Of two patterns with the same content the first is reported, as Aho-Corasick does.
    if (terminal_[static_cast<size_t>(node)] < 0) terminal_[static_cast<size_t>(node)] = index;
    first_byte_[static_cast<uint8_t>(pattern.content[0])] = true;
    patterns_.push_back(std::move(pattern));
  }
}

AddedVocabulary::Match AddedVocabulary::NextMatch(std::string_view text, size_t from) const {
  for (size_t begin = from; begin < text.size(); ++begin) {
    if (!first_byte_[static_cast<uint8_t>(text[begin])]) continue;
    Match longest{begin, begin, -1};
    int32_t node = 0;
    for (size_t pos = begin; pos < text.size(); ++pos) {
      node = Child(node, static_cast<uint8_t>(text[pos]));
      if (node < 0) break;
      if (const int32_t pattern = terminal_[static_cast<size_t>(node)]; pattern >= 0) {
        longest = Match{begin, pos + 1, pattern};
      }
    }
    if (longest.pattern >= 0) return longest;
  }
  return Match{text.size(), text.size(), -1};
}

void AddedVocabulary::FindMatches(std::string_view sentence, std::vector<Split>& splits) const {
  splits.clear();
  size_t start_offset = 0;  // end of the previous split
  for (size_t from = 0; from < sentence.size();) {
    const Match match = NextMatch(sentence, from);
    if (match.pattern < 0) break;
    from = match.end;
    const AddedTokenPattern& token = patterns_[static_cast<size_t>(match.pattern)];
    size_t start = match.begin;
    size_t stop = match.end;
    if (token.single_word) {
      const bool space_before = start == 0 || !EndsWithWord(sentence, start);
      const bool space_after = stop == sentence.size() || !StartsWithWord(sentence, stop);
      if (!space_before || !space_after) continue;  // inside a word: not this token
    }
    if (token.lstrip) start = std::max(WhitespaceRunStartBefore(sentence, start), start_offset);
    if (token.rstrip) stop = WhitespaceRunEndAfter(sentence, stop);
    if (start_offset < start) splits.push_back(Split{start_offset, start, kNoToken});
    splits.push_back(Split{start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset != sentence.size()) {
    splits.push_back(Split{start_offset, sentence.size(), kNoToken});
  }
}

}  // namespace sinkserve
