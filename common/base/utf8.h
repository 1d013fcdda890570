// UTF-8 helpers for the tokenizer: strict validation (Encode refuses what it cannot represent
// faithfully), fast decoding of text already validated, and the lossy repair HF applies when
// decoding (Rust's String::from_utf8_lossy: each maximal invalid subsequence -> one U+FFFD,
// as recommended by Unicode §3.9 "U+FFFD Substitution of Maximal Subparts").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace sinkserve::utf8 {

// What starts at one byte position of a byte string.
struct Sequence {
  enum class Kind : uint8_t {
    kValid,      // a complete, well-formed character of `length` bytes
    kInvalid,    // a maximal invalid subpart of `length` bytes (never completable)
    kTruncated,  // `length` bytes of a well-formed prefix that the input ends in the middle of
  };
  Kind kind;
  int length;  // 1..4, always > 0
};

// Classifies the sequence starting at bytes[pos]. Precondition: pos < bytes.size().
Sequence ScanSequence(std::string_view bytes, size_t pos);

// OK for well-formed UTF-8 (no surrogates, no overlongs, nothing above U+10FFFF); otherwise
// InvalidArgument "invalid UTF-8 at byte offset N: <reason>", N being the offset of the first
// byte of the offending sequence.
absl::Status Validate(std::string_view text);

// Decodes the character at text[pos] and advances pos past it. Precondition: `text` is valid
// UTF-8 and pos is at a character boundary, pos < text.size().
inline char32_t DecodeValid(std::string_view text, size_t& pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  const uint8_t b0 = p[0];
  if (b0 < 0x80) {
    pos += 1;
    return b0;
  }
  if (b0 < 0xE0) {
    pos += 2;
    return (char32_t{b0 & 0x1Fu} << 6) | (p[1] & 0x3Fu);
  }
  if (b0 < 0xF0) {
    pos += 3;
    return (char32_t{b0 & 0x0Fu} << 12) | (char32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
  }
  pos += 4;
  return (char32_t{b0 & 0x07u} << 18) | (char32_t{p[1] & 0x3Fu} << 12) |
         (char32_t{p[2] & 0x3Fu} << 6) | (p[3] & 0x3Fu);
}

// Start of the character that ends just before `pos` (pos > 0, text valid UTF-8).
inline size_t PreviousBoundary(std::string_view text, size_t pos) {
  do {
    --pos;
  } while (pos > 0 && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80);
  return pos;
}

// Appends the UTF-8 encoding of `cp` (a Unicode scalar value) to `out`.
void Append(char32_t cp, std::string& out);

// Appends `bytes` to `out`, each maximal invalid subsequence (and a truncated sequence at the
// end) replaced by U+FFFD.
void AppendLossy(std::string_view bytes, std::string& out);
inline std::string Lossy(std::string_view bytes) {
  std::string out;
  AppendLossy(bytes, out);
  return out;
}

}  // namespace sinkserve::utf8
