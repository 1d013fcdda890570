// The GPT-2 pre-tokenizer split, by hand: the same pieces HF's ByteLevel pre-tokenizer cuts with
// Oniguruma and the pattern
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// (leftmost-first alternation, greedy quantifiers, scanning resumes where a match ends). Every
// character is \s, \p{L}, \p{N} or none of them, so some alternative always matches at the scan
// position and the pieces tile the text. The character classes come from unicode.h.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace sinkserve {

// End (byte offset) of the pre-token that starts at `pos`. Preconditions: `text` is valid UTF-8
// and pos < text.size() is a character boundary. The result is > pos.
size_t NextPretokenEnd(std::string_view text, size_t pos);

// All pre-tokens of `text`, in order (for tests and tools; the tokenizer loops on
// NextPretokenEnd to avoid the vector).
std::vector<std::string_view> SplitPretokens(std::string_view text);

}  // namespace sinkserve
