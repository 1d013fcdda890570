// GPT-2's byte-level alphabet: every byte 0..255 is written as one printable Unicode character
// in tokenizer.json ("Ġ" = space 0x20, "Ċ" = newline 0x0A, printable ASCII as itself, ...).
// The tokenizer works on raw bytes internally and uses this only at the edges: to read vocab and
// merges, and to decode a token string back to bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sinkserve::byte_level {

// The alphabet character standing for `byte` (GPT-2's bytes_to_unicode()).
char32_t ByteToChar(uint8_t byte);
// The byte a character stands for, or nullopt when it is not in the alphabet.
std::optional<uint8_t> CharToByte(char32_t c);

// The token string for raw bytes: each byte as its alphabet character, UTF-8 encoded.
std::string EncodeBytes(std::string_view bytes);

// HF's ByteLevel decoder applied to one token string (valid UTF-8): if every character is in the
// alphabet, the bytes they stand for; otherwise the token's own UTF-8 bytes unchanged (this is
// what makes added tokens such as "<|endoftext|>" or a run of spaces decode as themselves).
std::string DecodeToken(std::string_view token);
// Like DecodeToken, but nullopt instead of the fallback when a character is outside the alphabet.
std::optional<std::string> DecodeAlphabetToken(std::string_view token);

}  // namespace sinkserve::byte_level
