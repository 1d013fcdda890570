// Property lookup (a two-stage table built once from unicode_data.cpp) and NFC (Unicode UAX #15:
// full canonical decomposition, canonical ordering, canonical composition).
#include "engine/tokenizer/unicode.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/tokenizer/unicode_data.h"
#include "common/base/utf8.h"

namespace sinkserve::unicode {
namespace {

namespace data = unicode_data;

constexpr char32_t kCodePointLimit = 0x110000;
constexpr int kBlockBits = 8;
constexpr char32_t kBlockSize = 1u << kBlockBits;

// Hangul syllables compose and decompose algorithmically (Unicode §3.12).
constexpr char32_t kHangulSBase = 0xAC00, kHangulLBase = 0x1100, kHangulVBase = 0x1161,
                   kHangulTBase = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount;
constexpr char32_t kHangulSCount = kHangulLCount * kHangulNCount;

bool IsHangulSyllable(char32_t cp) {
  return cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount;
}

// Two-stage table: block_index[cp >> 8] picks a 256-entry block of flags. Identical blocks are
// shared, which keeps the whole code space in ~100 KB (most of it is unassigned and flag-free).
class FlagTable {
 public:
  FlagTable() {
    std::vector<uint8_t> flat(kCodePointLimit, 0);
    for (int i = 0; i < data::kCharFlagRangeCount; ++i) {
      const data::CharFlagRange& range = data::kCharFlagRanges[i];
      for (char32_t cp = range.first; cp <= range.last; ++cp) flat[cp] = range.flags;
    }
    MarkNfcUnstable(flat);
    absl::flat_hash_map<std::string, uint16_t> block_ids;
    block_index_.resize(kCodePointLimit / kBlockSize);
    for (char32_t block = 0; block < kCodePointLimit / kBlockSize; ++block) {
      std::string key(reinterpret_cast<const char*>(&flat[block * kBlockSize]), kBlockSize);
      auto [it, inserted] = block_ids.try_emplace(key, static_cast<uint16_t>(block_ids.size()));
      if (inserted) blocks_.insert(blocks_.end(), key.begin(), key.end());
      block_index_[block] = it->second;
    }
  }

  uint8_t Get(char32_t cp) const {
    if (cp >= kCodePointLimit) return 0;
    return blocks_[(size_t{block_index_[cp >> kBlockBits]} << kBlockBits) |
                   (cp & (kBlockSize - 1))];
  }

 private:
  static void MarkNfcUnstable(std::vector<uint8_t>& flat) {
    std::vector<bool> is_composite(kCodePointLimit, false);
    for (int i = 0; i < data::kCompositionCount; ++i) {
      is_composite[data::kCompositions[i].composite] = true;
      flat[data::kCompositions[i].second] |= kCharFlagNfcUnstable;  // may join what precedes
    }
    for (int i = 0; i < data::kCombiningRankCount; ++i) {
      flat[data::kCombiningRanks[i].code_point] |= kCharFlagNfcUnstable;
    }
    for (int i = 0; i < data::kDecompositionCount; ++i) {
      const char32_t cp = data::kDecompositions[i].code_point;
      if (!is_composite[cp]) flat[cp] |= kCharFlagNfcUnstable;  // singleton or excluded
    }
    // Conjoining jamo vowels and trailing consonants compose with the syllable before them.
    for (char32_t cp = kHangulVBase; cp < kHangulVBase + kHangulVCount; ++cp) {
      flat[cp] |= kCharFlagNfcUnstable;
    }
    for (char32_t cp = kHangulTBase + 1; cp < kHangulTBase + kHangulTCount; ++cp) {
      flat[cp] |= kCharFlagNfcUnstable;
    }
  }

  std::vector<uint16_t> block_index_;  // [0x1100]
  std::vector<uint8_t> blocks_;        // [distinct blocks * 256]
};

const FlagTable& Flags() {
  static const FlagTable* table = new FlagTable();  // never destroyed: used until exit
  return *table;
}

uint8_t CombiningRank(char32_t cp) {
  const data::CodePointValue* begin = data::kCombiningRanks;
  const data::CodePointValue* end = begin + data::kCombiningRankCount;
  const auto* it = std::lower_bound(
      begin, end, cp, [](const data::CodePointValue& e, char32_t c) { return e.code_point < c; });
  return it != end && it->code_point == cp ? it->value : 0;
}

void AppendDecomposition(char32_t cp, std::vector<char32_t>& out) {
  if (IsHangulSyllable(cp)) {
    const char32_t s = cp - kHangulSBase;
    out.push_back(kHangulLBase + s / kHangulNCount);
    out.push_back(kHangulVBase + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount != 0) out.push_back(kHangulTBase + s % kHangulTCount);
    return;
  }
  const data::Decomposition* begin = data::kDecompositions;
  const data::Decomposition* end = begin + data::kDecompositionCount;
  const auto* it = std::lower_bound(
      begin, end, cp, [](const data::Decomposition& e, char32_t c) { return e.code_point < c; });
  if (it == end || it->code_point != cp) {
    out.push_back(cp);
    return;
  }
  out.insert(out.end(), data::kDecompositionPool + it->offset,
             data::kDecompositionPool + it->offset + it->length);
}

// The primary composite of (first, second), or 0 when they do not compose.
char32_t Compose(char32_t first, char32_t second) {
  if (first >= kHangulLBase && first < kHangulLBase + kHangulLCount && second >= kHangulVBase &&
      second < kHangulVBase + kHangulVCount) {
    return kHangulSBase +
           ((first - kHangulLBase) * kHangulVCount + (second - kHangulVBase)) * kHangulTCount;
  }
  if (IsHangulSyllable(first) && (first - kHangulSBase) % kHangulTCount == 0 &&
      second > kHangulTBase && second < kHangulTBase + kHangulTCount) {
    return first + (second - kHangulTBase);
  }
  const data::Composition* begin = data::kCompositions;
  const data::Composition* end = begin + data::kCompositionCount;
  const auto* it =
      std::lower_bound(begin, end, std::pair{first, second},
                       [](const data::Composition& e, std::pair<char32_t, char32_t> k) {
                         return std::pair{e.first, e.second} < k;
                       });
  return it != end && it->first == first && it->second == second ? it->composite : 0;
}

// Full NFC of one segment (a run bounded by normalization boundaries).
void NormalizeSegment(std::string_view segment, std::vector<char32_t>& buffer, std::string& out) {
  buffer.clear();
  for (size_t pos = 0; pos < segment.size();)
    AppendDecomposition(utf8::DecodeValid(segment, pos), buffer);

  // Canonical ordering: stable sort of every run of non-starters by combining class. A sort
  // rather than the textbook bubble pass, so a hostile run of marks costs O(n log n).
  std::vector<uint8_t> ranks(buffer.size());
  for (size_t i = 0; i < buffer.size(); ++i) ranks[i] = CombiningRank(buffer[i]);
  for (size_t i = 0; i < buffer.size();) {
    if (ranks[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < buffer.size() && ranks[j] != 0) ++j;
    if (j - i > 1) {
      std::vector<std::pair<uint8_t, char32_t>> run;
      for (size_t k = i; k < j; ++k) run.emplace_back(ranks[k], buffer[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t k = i; k < j; ++k) std::tie(ranks[k], buffer[k]) = run[k - i];
    }
    i = j;
  }

  // Canonical composition (UAX #15 §1.3): each character joins the last starter unless a
  // character of equal or higher class (or a starter) sits between them.
  size_t written = 0;
  size_t starter = SIZE_MAX;  // index of the last starter in buffer[0, written)
  int last_rank = -1;         // rank of the last character kept, -1 before any
  for (size_t i = 0; i < buffer.size(); ++i) {
    const char32_t cp = buffer[i];
    const int rank = ranks[i];
    if (starter != SIZE_MAX && (last_rank < rank || (last_rank == 0 && written - 1 == starter))) {
      if (const char32_t composite = Compose(buffer[starter], cp); composite != 0) {
        buffer[starter] = composite;
        continue;
      }
    }
    if (rank == 0) starter = written;
    last_rank = rank;
    buffer[written++] = cp;
  }
  for (size_t i = 0; i < written; ++i) utf8::Append(buffer[i], out);
}

bool IsUnstable(char32_t cp) { return (Flags().Get(cp) & kCharFlagNfcUnstable) != 0; }

// Advances `pos` over ASCII, 8 bytes at a time. ASCII is never NFC-unstable.
void SkipAscii(std::string_view text, size_t& pos) {
  while (pos + 8 <= text.size()) {
    uint64_t word;
    std::memcpy(&word, text.data() + pos, 8);
    if (word & 0x8080808080808080ull) break;
    pos += 8;
  }
  while (pos < text.size() && static_cast<uint8_t>(text[pos]) < 0x80) ++pos;
}

}  // namespace

uint8_t CharFlags(char32_t cp) { return Flags().Get(cp); }

bool IsNfcQuickYes(std::string_view text) {
  for (size_t pos = 0;;) {
    SkipAscii(text, pos);
    if (pos >= text.size()) return true;
    if (IsUnstable(utf8::DecodeValid(text, pos))) return false;
  }
}

void AppendNfc(std::string_view text, std::string& out) {
  std::vector<char32_t> buffer;
  size_t copied = 0;  // text[0, copied) has been appended to `out`
  size_t pos = 0;
  for (;;) {
    SkipAscii(text, pos);
    if (pos >= text.size()) break;
    const size_t start = pos;
    if (!IsUnstable(utf8::DecodeValid(text, pos))) continue;
    // The segment to normalize starts at the (stable) character before the unstable one, which
    // it may compose with, and ends before the next stable character: stable characters are
    // boundaries that nothing composes with or reorders across.
    const size_t segment_begin = start > copied ? utf8::PreviousBoundary(text, start) : start;
    size_t segment_end = pos;
    while (segment_end < text.size()) {
      size_t next = segment_end;
      if (!IsUnstable(utf8::DecodeValid(text, next))) break;
      segment_end = next;
    }
    out.append(text.substr(copied, segment_begin - copied));
    NormalizeSegment(text.substr(segment_begin, segment_end - segment_begin), buffer, out);
    copied = pos = segment_end;
  }
  out.append(text.substr(copied));
}

std::string Nfc(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendNfc(text, out);
  return out;
}

}  // namespace sinkserve::unicode
