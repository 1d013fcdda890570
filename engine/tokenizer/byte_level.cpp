#include "engine/tokenizer/byte_level.h"

#include <array>

#include "common/base/utf8.h"

namespace sinkserve::byte_level {
namespace {

// bytes_to_unicode(): printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the
// other 68 bytes map, in increasing order, to U+0100, U+0101, ... so no token string contains
// whitespace or control characters.
constexpr bool IsSelfMapped(int byte) {
  return (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) ||
         (byte >= 0xAE && byte <= 0xFF);
}

constexpr std::array<char32_t, 256> MakeByteToChar() {
  std::array<char32_t, 256> table{};
  char32_t next = 0x100;
  for (int byte = 0; byte < 256; ++byte) {
    table[static_cast<size_t>(byte)] = IsSelfMapped(byte) ? static_cast<char32_t>(byte) : next++;
  }
  return table;
}

constexpr std::array<char32_t, 256> kByteToChar = MakeByteToChar();
// Every alphabet character is below U+0144 (256 + 68), so the inverse is a small array.
constexpr char32_t kAlphabetLimit = 0x100 + 68;

constexpr std::array<int16_t, kAlphabetLimit> MakeCharToByte() {
  std::array<int16_t, kAlphabetLimit> table{};
  for (auto& entry : table) entry = -1;
  for (int byte = 0; byte < 256; ++byte) {
    table[kByteToChar[static_cast<size_t>(byte)]] = static_cast<int16_t>(byte);
  }
  return table;
}

constexpr std::array<int16_t, kAlphabetLimit> kCharToByte = MakeCharToByte();

}  // namespace

char32_t ByteToChar(uint8_t byte) { return kByteToChar[byte]; }

std::optional<uint8_t> CharToByte(char32_t c) {
  if (c >= kAlphabetLimit || kCharToByte[c] < 0) return std::nullopt;
  return static_cast<uint8_t>(kCharToByte[c]);
}

std::string EncodeBytes(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char byte : bytes) utf8::Append(ByteToChar(static_cast<uint8_t>(byte)), out);
  return out;
}

std::optional<std::string> DecodeAlphabetToken(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t pos = 0; pos < token.size();) {
    const std::optional<uint8_t> byte = CharToByte(utf8::DecodeValid(token, pos));
    if (!byte) return std::nullopt;
    bytes.push_back(static_cast<char>(*byte));
  }
  return bytes;
}

std::string DecodeToken(std::string_view token) {
  std::optional<std::string> bytes = DecodeAlphabetToken(token);
  return bytes ? *std::move(bytes) : std::string(token);
}

}  // namespace sinkserve::byte_level
