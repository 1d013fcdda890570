// Prompts for the load generator and texts for scoring, as token ids cut to an exact length.
//
// The client tokenizes by itself (rather than sending text) because the benchmark's prompt and
// score lengths are token counts: a text cut to N characters is a different number of tokens
// under every tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include "sinkserve/v1/sinkserve.pb.h"

namespace sinkserve::bench {

// The tokenizer of the served model: `path` (a tokenizer.json) when given, else the demo
// model's byte-level tokenizer when the server runs the demo. A real model with no `path` is an
// INVALID_ARGUMENT naming --tokenizer.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path,
                                                         const v1::ModelInfo& model);

// Tokens of the concatenated `files` (joined with "\n\n", as the seed joined WikiText), at
// most `max_tokens` of them (0 = all). Only the text needed is tokenized.
absl::StatusOr<std::vector<int32_t>> TokenizeFiles(const Tokenizer& tokenizer,
                                                   const std::vector<std::string>& files,
                                                   int64_t max_tokens);

// Prompts of exactly `prompt_tokens` tokens: consecutive slices of the files' tokens (wrapping
// around), or, with no files, uniformly random ids below the model's vocabulary size.
class PromptSource {
 public:
  static absl::StatusOr<PromptSource> FromFiles(const Tokenizer& tokenizer,
                                                const std::vector<std::string>& files,
                                                int prompt_tokens);
  static PromptSource Random(uint32_t vocab_size, int prompt_tokens, uint64_t seed);

  std::vector<uint32_t> Next();
  int prompt_tokens() const { return prompt_tokens_; }

 private:
  PromptSource(int prompt_tokens, std::vector<int32_t> text_tokens, uint32_t vocab_size,
               uint64_t seed);

  int prompt_tokens_;
  std::vector<int32_t> text_tokens_;  // empty: random ids
  size_t next_offset_ = 0;
  uint32_t vocab_size_;
  std::mt19937_64 random_;
};

}  // namespace sinkserve::bench
