// The one parser of untrusted JSON: config.json, tokenizer.json, safetensors headers and their
// index files all go through ParseStrictJson, so they follow the same rules.
//
// Refused, beyond what RFC 8259 refuses (nlohmann's parser, no comments, one value then only
// whitespace):
//   - invalid UTF-8 (utf8::Validate's rules: no overlongs, surrogates or bytes past U+10FFFF);
//   - a byte order mark (nlohmann would skip it; serde_json and Python's json refuse it);
//   - a raw NUL byte anywhere (JSON escapes it in strings; nlohmann would stop reading there);
//   - a key repeated in one object (nlohmann keeps the last one, serde the last, other readers
//     the first: two readers could disagree about the same file);
//   - nesting deeper than kMaxJsonDepth objects and arrays.
// Errors are INVALID_ARGUMENT (RESOURCE_EXHAUSTED when memory runs out) and read
// "SOURCE: what (at 'path.to[3].key')", the path naming where in the document it went wrong.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace sinkserve {

// The real files nest far less (tokenizer.json 4 levels, a safetensors header 3, config.json 2);
// the cap bounds the parser's stacks on hostile input.
inline constexpr int kMaxJsonDepth = 64;

// Parses TEXT, one JSON value, under the rules above. SOURCE (a file name) starts every error.
absl::StatusOr<nlohmann::json> ParseStrictJson(std::string_view text, std::string_view source);

}  // namespace sinkserve
