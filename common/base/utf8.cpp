// UTF-8 scanning per Unicode Table 3-7 (well-formed byte sequences).
#include "common/base/utf8.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sinkserve::utf8 {
namespace {

// The range the second byte must lie in after lead byte b0; Table 3-7 tightens it for E0 (no
// overlongs), ED (no surrogates), F0 (no overlongs) and F4 (nothing above U+10FFFF).
struct SecondByteRange {
  uint8_t low, high;
};
SecondByteRange SecondRange(uint8_t b0) {
  switch (b0) {
    case 0xE0:
      return {0xA0, 0xBF};
    case 0xED:
      return {0x80, 0x9F};
    case 0xF0:
      return {0x90, 0xBF};
    case 0xF4:
      return {0x80, 0x8F};
    default:
      return {0x80, 0xBF};
  }
}

// Total length of a sequence led by b0, or 0 when b0 can never start one.
int SequenceLength(uint8_t b0) {
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return 2;
  if (b0 >= 0xE0 && b0 <= 0xEF) return 3;
  if (b0 >= 0xF0 && b0 <= 0xF4) return 4;
  return 0;  // continuation bytes, C0/C1 (always overlong), F5..FF (beyond U+10FFFF)
}

std::string Hex(uint8_t byte) { return absl::StrFormat("0x%02X", byte); }

// Why the sequence at `pos` (known not to be kValid) is refused.
std::string Reason(std::string_view bytes, size_t pos, const Sequence& seq) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  const uint8_t b0 = byte(pos);
  const int need = SequenceLength(b0);
  if (seq.kind == Sequence::Kind::kTruncated) {
    return absl::StrCat("truncated ", need, "-byte sequence at the end of the input");
  }
  if (need == 0) {
    if (b0 >= 0x80 && b0 <= 0xBF) return absl::StrCat("unexpected continuation byte ", Hex(b0));
    if (b0 == 0xC0 || b0 == 0xC1) {
      return absl::StrCat("overlong encoding (lead byte ", Hex(b0), ")");
    }
    return absl::StrCat("byte ", Hex(b0), " never occurs in UTF-8 (code point above U+10FFFF)");
  }
  const uint8_t bad = byte(pos + static_cast<size_t>(seq.length));
  if (seq.length == 1 && (bad & 0xC0) == 0x80) {
    // A continuation byte outside the tightened range: the lead byte says what is wrong.
    if (b0 == 0xE0 || b0 == 0xF0) {
      return absl::StrCat("overlong encoding (", Hex(b0), " ", Hex(bad), ")");
    }
    if (b0 == 0xED) return absl::StrCat("UTF-16 surrogate (", Hex(b0), " ", Hex(bad), ")");
    return absl::StrCat("code point above U+10FFFF (", Hex(b0), " ", Hex(bad), ")");
  }
  return absl::StrCat("truncated ", need, "-byte sequence (byte ", Hex(bad), " at offset ",
                      pos + static_cast<size_t>(seq.length), " is not a continuation byte)");
}

}  // namespace

Sequence ScanSequence(std::string_view bytes, size_t pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data()) + pos;
  const size_t available = bytes.size() - pos;
  const int need = SequenceLength(p[0]);
  if (need == 1) return {Sequence::Kind::kValid, 1};
  if (need == 0) return {Sequence::Kind::kInvalid, 1};
  for (int i = 1; i < need; ++i) {
    if (static_cast<size_t>(i) >= available) return {Sequence::Kind::kTruncated, i};
    const SecondByteRange range = i == 1 ? SecondRange(p[0]) : SecondByteRange{0x80, 0xBF};
    if (p[i] < range.low || p[i] > range.high) return {Sequence::Kind::kInvalid, i};
  }
  return {Sequence::Kind::kValid, need};
}

absl::Status Validate(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII fast path, 8 bytes at a time: English text is almost all ASCII.
    while (pos + 8 <= text.size()) {
      uint64_t word;
      __builtin_memcpy(&word, text.data() + pos, 8);
      if (word & 0x8080808080808080ull) break;
      pos += 8;
    }
    if (pos >= text.size()) break;
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Sequence seq = ScanSequence(text, pos);
    if (seq.kind != Sequence::Kind::kValid) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid UTF-8 at byte offset ", pos, ": ", Reason(text, pos, seq)));
    }
    pos += static_cast<size_t>(seq.length);
  }
  return absl::OkStatus();
}

void Append(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void AppendLossy(std::string_view bytes, std::string& out) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  size_t pos = 0;
  size_t copied = 0;  // bytes before `copied` are already in `out`
  while (pos < bytes.size()) {
    const Sequence seq = ScanSequence(bytes, pos);
    if (seq.kind == Sequence::Kind::kValid) {
      pos += static_cast<size_t>(seq.length);
      continue;
    }
    out.append(bytes.substr(copied, pos - copied));
    out.append(kReplacement);
    pos += static_cast<size_t>(seq.length);
    copied = pos;
  }
  out.append(bytes.substr(copied));
}

}  // namespace sinkserve::utf8
