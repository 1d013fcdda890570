// Tokenizer: a Hugging Face `tokenizer.json` of type BPE with byte-level pre-tokenization and
// decoding (GPT-2 / GPT-NeoX / Pythia), reproducing HF `tokenizers` id for id (docs/tokenizer.md).
//
// Encode pipeline, in HF's order (each stage lives in its own file):
//   1. UTF-8 validation (utf8.h): invalid input is refused, never repaired.
//   2. Added tokens with `normalized: false` are cut out of the raw text (added_vocabulary.h).
//   3. Each remaining piece is NFC-normalized (unicode.h), then added tokens with
//      `normalized: true` are cut out of the normalized piece.
//   4. Each remaining piece is split by the GPT-2 regex (pretokenizer.h) and every pre-token
//      is turned into ids by byte-level BPE (bpe.h).
// Decoding maps every token back to its bytes (byte_level.h) and concatenates them.
//
// A Tokenizer is immutable after construction apart from an internal, internally locked
// pre-token cache: every const method may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve {

class AddedVocabulary;
class BpeModel;
struct TokenizerSpec;

class Tokenizer {
 public:
  // Loads a HF tokenizer.json (model type BPE, ByteLevel pre-tokenizer and decoder, optional NFC
  // normalizer). Anything else (other normalizers, templates, truncation, padding, dropout,
  // subword prefixes/suffixes...) is refused with InvalidArgument naming the feature, rather
  // than silently producing ids the model was never trained on. Like HF, added tokens get the id
  // HF assigns (their vocab id if their content is in the vocab, else the next free one), not
  // the "id" written next to them.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json,
                                                             std::string_view source_name);

  // The demo model's tokenizer: 256 byte tokens (id = byte value, through the same byte-level
  // machinery, no merges, no normalizer, so Decode(Encode(x)) == x for all valid UTF-8) plus
  // the special token "<|endoftext|>" = 256. vocab_size() == 257.
  static std::unique_ptr<Tokenizer> ByteLevelDemo();

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text -> ids. Invalid UTF-8 -> InvalidArgument whose message says "invalid UTF-8", the
  // reason and the byte offset of the first bad byte.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;

  // Ids -> the raw concatenated bytes of their tokens. The result may end in (or contain) an
  // incomplete UTF-8 sequence when the ids split a character; see DecodeLossy and
  // IncrementalDetokenizer for text that is always valid UTF-8.
  // Precondition: every id is valid (IsValidId). Invalid ids are skipped, as HF does, so a
  // broken caller gets wrong text rather than a crash; TryDecode reports them instead.
  std::string Decode(std::span<const int32_t> ids) const;
  // Decode, but an invalid id is InvalidArgument naming it and its position.
  absl::StatusOr<std::string> TryDecode(std::span<const int32_t> ids) const;
  // Decode followed by the lossy UTF-8 repair HF applies (each maximal invalid subsequence
  // becomes U+FFFD): exactly HF's `decode(ids, skip_special_tokens=False)`.
  std::string DecodeLossy(std::span<const int32_t> ids) const;

  // Decoded bytes of one token ("" for an invalid id).
  std::string_view TokenBytes(int32_t id) const;
  // The token's string as written in tokenizer.json (byte-level alphabet, e.g. "Ġthe"), or ""
  // for an invalid id. For logs and debugging.
  std::string_view TokenString(int32_t id) const;
  // True when `id` names a token (ids may have holes in a hand-made tokenizer.json).
  bool IsValidId(int32_t id) const;
  // True for added tokens marked `special` (e.g. "<|endoftext|>", "<|padding|>").
  bool IsSpecialToken(int32_t id) const;

  int32_t vocab_size() const;                   // max id + 1
  std::optional<int32_t> eos_token_id() const;  // "<|endoftext|>" if present

 private:
  struct TokenInfo {
    std::string content;  // as in tokenizer.json
    std::string bytes;    // what it decodes to
    bool valid = false;
    bool special = false;
  };

  Tokenizer();
  // Turns a parsed tokenizer.json (or the demo's spec) into the runtime tables.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Build(const TokenizerSpec& spec);
  // Cuts out normalized added tokens, pre-tokenizes and runs BPE on one piece of normalized
  // text, appending to `ids`.
  void EncodeNormalizedPiece(std::string_view normalized, std::vector<int32_t>& ids) const;
  void EncodeOrdinaryText(std::string_view normalized, std::vector<int32_t>& ids) const;

  bool normalize_nfc_ = false;
  bool add_prefix_space_ = false;
  bool use_regex_ = true;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedVocabulary> added_raw_;         // normalized: false
  std::unique_ptr<AddedVocabulary> added_normalized_;  // normalized: true
  std::vector<TokenInfo> tokens_;                      // [vocab_size()], indexed by id
  std::optional<int32_t> eos_token_id_;
};

}  // namespace sinkserve
