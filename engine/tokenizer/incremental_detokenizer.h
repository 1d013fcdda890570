// IncrementalDetokenizer: turns a stream of token ids into a stream of text for streaming
// responses, never emitting half a UTF-8 character.
//
// Byte-level BPE tokens are byte strings, and one character may be spread over several tokens
// (an emoji is often 2-4 byte tokens). Push() therefore holds back a trailing *incomplete but
// still valid* UTF-8 prefix until the next token completes it. Bytes that can never become valid
// (a stray continuation byte, an overlong lead, ...) are not held: they are emitted at once as
// U+FFFD, one per maximal invalid subsequence, exactly like HF's lossy decode.
//
// Contract: the concatenation of every Push() plus Finish() equals Tokenizer::DecodeLossy(ids),
// which is Tokenizer::Decode(ids) whenever that is valid UTF-8; each returned string is valid
// UTF-8 on its own.
#pragma once

#include <cstdint>
#include <string>

namespace sinkserve {

class Tokenizer;

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer);

  // Appends the token `id` (an invalid id contributes nothing) and returns the text that became
  // complete (possibly empty).
  std::string Push(int32_t id);
  // Flushes the held-back bytes: an incomplete trailing sequence becomes one U+FFFD. The object
  // may be reused afterwards for a new stream.
  std::string Finish();

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;  // at most 3 bytes: a valid but incomplete UTF-8 prefix
};

}  // namespace sinkserve
