#include "engine/tokenizer/incremental_detokenizer.h"

#include "engine/tokenizer/tokenizer.h"
#include "common/base/utf8.h"

namespace sinkserve {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer)
    : tokenizer_(&tokenizer) {}

std::string IncrementalDetokenizer::Push(int32_t id) {
  pending_.append(tokenizer_->TokenBytes(id));
  // Everything is final except a truncated sequence at the very end: a later token may still
  // complete it. Invalid bytes are final too (no continuation can repair them), so they go out
  // now as U+FFFD instead of stalling the stream.
  size_t settled = 0;
  while (settled < pending_.size()) {
    const utf8::Sequence seq = utf8::ScanSequence(pending_, settled);
    if (seq.kind == utf8::Sequence::Kind::kTruncated) break;
    settled += static_cast<size_t>(seq.length);
  }
  std::string text;
  utf8::AppendLossy(std::string_view(pending_).substr(0, settled), text);
  pending_.erase(0, settled);
  return text;
}

std::string IncrementalDetokenizer::Finish() {
  std::string text = utf8::Lossy(pending_);
  pending_.clear();
  return text;
}

}  // namespace sinkserve
