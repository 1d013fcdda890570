// Unicode properties and NFC normalization exactly as HF `tokenizers` sees them.
//
// The tables come from unicode_data.cpp, measured from HF itself (see
// scripts/gen/make_unicode_data.py): HF's regex engine knows Unicode 16 while its
// NFC normalizer knows a much older version, and no system library reproduces that mix.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sinkserve::unicode {

// Per-code-point property bits.
enum CharFlag : uint8_t {
  kCharFlagLetter = 1,      // \p{L} in HF's pre-tokenizer regex (Oniguruma)
  kCharFlagNumber = 2,      // \p{N} (Oniguruma)
  kCharFlagSpace = 4,       // \s (Oniguruma): 0009-000D, 0020, 0085, 00A0, 1680, 2000-200A, ...
  kCharFlagWord = 8,        // \w of the Rust regex crate (added tokens' single_word)
  kCharFlagRustSpace = 16,  // \s of the Rust regex crate (added tokens' lstrip / rstrip)
  // Set when the character may change under NFC or may combine with what precedes it: a
  // non-zero combining class, a decomposition that does not recompose, the second half of a
  // canonical composition (NFC_Quick_Check != Yes or ccc != 0). Text without such characters
  // is already NFC, and every unflagged character is a normalization boundary.
  kCharFlagNfcUnstable = 32,
};

// The CharFlag bits of `cp` (0 for code points above U+10FFFF).
uint8_t CharFlags(char32_t cp);

// Appends NFC(text) to `out`. Precondition: `text` is valid UTF-8. Runs of text that are
// already NFC are copied, so mostly-ASCII text costs about a memcpy.
void AppendNfc(std::string_view text, std::string& out);
std::string Nfc(std::string_view text);

// True when `text` (valid UTF-8) contains no kCharFlagNfcUnstable character, i.e. NFC(text)
// is text.
bool IsNfcQuickYes(std::string_view text);

}  // namespace sinkserve::unicode
