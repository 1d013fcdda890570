#include "engine/tokenizer/pretokenizer.h"

#include "engine/tokenizer/unicode.h"
#include "common/base/utf8.h"

namespace sinkserve {
namespace {

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

// Classes of ASCII, precomputed because English text is nearly all ASCII.
struct AsciiClasses {
  CharClass of[128];
  AsciiClasses() {
    for (char32_t c = 0; c < 128; ++c) of[c] = Classify(c);
  }
  static CharClass Classify(char32_t cp) {
    const uint8_t flags = unicode::CharFlags(cp);
    if (flags & unicode::kCharFlagLetter) return CharClass::kLetter;
    if (flags & unicode::kCharFlagNumber) return CharClass::kNumber;
    if (flags & unicode::kCharFlagSpace) return CharClass::kSpace;
    return CharClass::kOther;
  }
};

const AsciiClasses& Ascii() {
  static const AsciiClasses* classes = new AsciiClasses();
  return *classes;
}

// Class of the character at text[pos]; advances pos past it.
CharClass ClassAt(std::string_view text, size_t& pos) {
  const auto byte = static_cast<uint8_t>(text[pos]);
  if (byte < 0x80) {
    ++pos;
    return Ascii().of[byte];
  }
  return AsciiClasses::Classify(utf8::DecodeValid(text, pos));
}

// Length of the contraction ('s 't 're 've 'm 'll 'd, lower case only) at text[pos], or 0.
size_t ContractionLength(std::string_view text, size_t pos) {
  if (text[pos] != '\'' || pos + 1 >= text.size()) return 0;
  switch (text[pos + 1]) {
    case 's':
    case 't':
    case 'm':
    case 'd':
      return 2;
    case 'r':
    case 'v':
      return pos + 2 < text.size() && text[pos + 2] == 'e' ? 3 : 0;
    case 'l':
      return pos + 2 < text.size() && text[pos + 2] == 'l' ? 3 : 0;
    default:
      return 0;
  }
}

// End of the run of characters of class `cls` that starts at pos (pos may be the end).
size_t RunEnd(std::string_view text, size_t pos, CharClass cls) {
  while (pos < text.size()) {
    size_t next = pos;
    if (ClassAt(text, next) != cls) break;
    pos = next;
  }
  return pos;
}

}  // namespace

size_t NextPretokenEnd(std::string_view text, size_t pos) {
  if (const size_t contraction = ContractionLength(text, pos); contraction != 0) {
    return pos + contraction;
  }
  size_t after_first = pos;
  const CharClass first = ClassAt(text, after_first);
  if (first != CharClass::kSpace) {
    // \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+ (an apostrophe not starting a contraction lands here).
    return RunEnd(text, after_first, first);
  }
  if (text[pos] == ' ' && after_first < text.size()) {
    // " ?X+": a single U+0020 glues onto the run of letters, digits or other characters after it.
    size_t after_second = after_first;
    const CharClass second = ClassAt(text, after_second);
    if (second != CharClass::kSpace) return RunEnd(text, after_second, second);
  }
  // \s+(?!\S) then \s+: a whitespace run that reaches the end of the text is taken whole; one
  // followed by a non-space gives up its last character (which then leads the next piece), unless
  // it is a single character, which \s+ takes alone.
  const size_t run_end = RunEnd(text, after_first, CharClass::kSpace);
  if (run_end == text.size() || after_first == run_end) return run_end;
  return utf8::PreviousBoundary(text, run_end);
}

std::vector<std::string_view> SplitPretokens(std::string_view text) {
  std::vector<std::string_view> pieces;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = NextPretokenEnd(text, pos);
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

}  // namespace sinkserve
