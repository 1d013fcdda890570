#include "client/prompt_source.h"

#include "absl/strings/str_cat.h"
#include "common/base/file.h"

namespace sinkserve::bench {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path,
                                                         const v1::ModelInfo& model) {
  if (!path.empty()) return Tokenizer::FromFile(path);
  if (model.demo()) return Tokenizer::ByteLevelDemo();
  return absl::InvalidArgumentError(
      absl::StrCat("--tokenizer FILE is needed to cut texts to token counts: the server runs \"",
                   model.model_name(),
                   "\", pass its tokenizer.json (e.g. the model directory's "
                   "tokenizer.json), or use random prompt ids"));
}

absl::StatusOr<std::vector<int32_t>> TokenizeFiles(const Tokenizer& tokenizer,
                                                   const std::vector<std::string>& files,
                                                   int64_t max_tokens) {
  std::string text;
  for (const std::string& file : files) {
    absl::StatusOr<std::string> contents = ReadFile(file);
    if (!contents.ok()) return contents.status();
    if (!text.empty()) text += "\n\n";
    text += *contents;
  }
  // No English token is longer than ~16 bytes: tokenize a prefix, grow it if it was too short.
  for (size_t bytes = max_tokens > 0 ? static_cast<size_t>(max_tokens) * 16 : text.size();;
       bytes *= 4) {
    bytes = std::min(bytes, text.size());
    // Cut at a character boundary (never inside a UTF-8 sequence).
    while (bytes < text.size() && (static_cast<unsigned char>(text[bytes]) & 0xC0) == 0x80) ++bytes;
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(std::string_view(text).substr(0, bytes));
    if (!ids.ok()) return ids.status();
    if (max_tokens > 0 && static_cast<int64_t>(ids->size()) > max_tokens) {
      ids->resize(static_cast<size_t>(max_tokens));
      return ids;
    }
    if (bytes == text.size()) return ids;
  }
}

PromptSource::PromptSource(int prompt_tokens, std::vector<int32_t> text_tokens,
                           uint32_t vocab_size, uint64_t seed)
    : prompt_tokens_(prompt_tokens),
      text_tokens_(std::move(text_tokens)),
      vocab_size_(vocab_size),
      random_(seed) {}

absl::StatusOr<PromptSource> PromptSource::FromFiles(const Tokenizer& tokenizer,
                                                     const std::vector<std::string>& files,
                                                     int prompt_tokens) {
  // Enough text for 64 distinct prompts; later prompts reuse it.
  absl::StatusOr<std::vector<int32_t>> tokens =
      TokenizeFiles(tokenizer, files, static_cast<int64_t>(prompt_tokens) * 64);
  if (!tokens.ok()) return tokens.status();
  if (static_cast<int>(tokens->size()) < prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt files hold ", tokens->size(),
                                                   " tokens, fewer than --prompt-tokens ",
                                                   prompt_tokens));
  }
  return PromptSource(prompt_tokens, std::move(*tokens), 0, 0);
}

PromptSource PromptSource::Random(uint32_t vocab_size, int prompt_tokens, uint64_t seed) {
  return PromptSource(prompt_tokens, {}, vocab_size, seed);
}

std::vector<uint32_t> PromptSource::Next() {
  std::vector<uint32_t> prompt(static_cast<size_t>(prompt_tokens_));
  if (text_tokens_.empty()) {
    std::uniform_int_distribution<uint32_t> id(0, vocab_size_ - 1);
    for (uint32_t& token : prompt) token = id(random_);
    return prompt;
  }
  if (next_offset_ + prompt.size() > text_tokens_.size()) next_offset_ = 0;
  for (size_t i = 0; i < prompt.size(); ++i) {
    prompt[i] = static_cast<uint32_t>(text_tokens_[next_offset_ + i]);
  }
  next_offset_ += prompt.size();
  return prompt;
}

}  // namespace sinkserve::bench
