// Quoting text from untrusted input (a tensor name, a JSON key, a token) for an error message:
// escaped, so a message carries no control bytes, and cut, so it cannot be megabytes long.
#pragma once

#include <string>
#include <string_view>

namespace sinkserve {

// 'text' with C escapes (\n, \x01, \', \"); text over 120 bytes is cut there and followed by
// "... (N bytes)".
std::string Quote(std::string_view text);

}  // namespace sinkserve
