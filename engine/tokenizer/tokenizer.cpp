// Tokenizer: reading tokenizer.json (the only code that knows its keys) and the encode/decode
// pipeline described in tokenizer.h.
#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/quote.h"
#include "common/base/status_macros.h"
#include "common/base/strict_json.h"
#include "common/base/utf8.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "nlohmann/json.hpp"

namespace sinkserve {

// Everything read from tokenizer.json, before it is turned into the runtime structures.
struct AddedTokenSpec {
  int32_t id = 0;  // as written in the file (HF, and so Build, recompute it)
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
  bool operator==(const AddedTokenSpec& other) const {
    return content == other.content && single_word == other.single_word && lstrip == other.lstrip &&
           rstrip == other.rstrip && normalized == other.normalized && special == other.special;
  }
};

struct TokenizerSpec {
  bool nfc = false;
  bool add_prefix_space = false;
  bool use_regex = true;
  absl::flat_hash_map<std::string, int32_t> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool ignore_merges = false;
  std::vector<AddedTokenSpec> added_tokens;
};

namespace {

using Json = nlohmann::json;

// Real ones are 2 MB (Pythia) to 35 MB (the largest vocabularies); this bounds what a hostile
// file makes us read.
constexpr uint64_t kMaxTokenizerBytes = 200'000'000;
// Far above any real vocabulary; bounds the id-indexed tables a hostile file could make us
// allocate.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
constexpr char kEndOfText[] = "<|endoftext|>";

absl::string_view Sv(std::string_view text) { return {text.data(), text.size()}; }

// ---------------------------------------------------------------------------------------------
// JSON access. Every accessor returns InvalidArgument naming the field instead of throwing.

std::string Describe(const Json& value) {
  if (value.is_string()) return Quote(value.get_ref<const std::string&>());
  if (value.is_number() || value.is_boolean() || value.is_null()) return value.dump().substr(0, 40);
  return std::string(value.type_name());
}

// The member `key` of `object`, or nullptr when absent or null.
const Json* Member(const Json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<bool> GetBool(const Json& object, const char* key, bool default_value,
                             const std::string& where) {
  const Json* value = Member(object, key);
  if (value == nullptr) return default_value;
  if (!value->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, " must be true or false, not ", Describe(*value)));
  }
  return value->get<bool>();
}

absl::StatusOr<std::string> GetType(const Json& object, const std::string& where) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " must be an object, not ", Describe(object)));
  }
  const Json* type = Member(object, "type");
  if (type == nullptr || !type->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has no \"type\" string"));
  }
  return type->get<std::string>();
}

absl::StatusOr<int32_t> GetId(const Json& value, const std::string& where) {
  bool in_range = false;
  if (value.is_number_unsigned()) {
    in_range = value.get<uint64_t>() <= static_cast<uint64_t>(kMaxTokenId);
  } else if (value.is_number_integer()) {
    in_range = value.get<int64_t>() >= 0 && value.get<int64_t>() <= kMaxTokenId;
  }
  if (!in_range) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": token id must be an integer in [0, ",
                                                   kMaxTokenId, "], not ", Describe(value)));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

absl::Status Unsupported(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported tokenizer feature: ", what));
}

// ---------------------------------------------------------------------------------------------
// Sections of tokenizer.json.

// null, NFC, or a Sequence of NFCs (NFC is idempotent).
absl::Status ReadNormalizer(const Json& root, TokenizerSpec& spec) {
  const Json* normalizer = Member(root, "normalizer");
  if (normalizer == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::string type, GetType(*normalizer, "normalizer"));
  if (type == "NFC") {
    spec.nfc = true;
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    const Json* list = Member(*normalizer, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return absl::InvalidArgumentError("normalizer.normalizers must be an array");
    }
    for (const Json& item : *list) {
      ASSIGN_OR_RETURN(const std::string item_type, GetType(item, "normalizer.normalizers[]"));
      if (item_type != "NFC") return Unsupported(absl::StrCat("normalizer ", Quote(item_type)));
      spec.nfc = true;
    }
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat("normalizer ", Quote(type), " (only NFC is implemented)"));
}

absl::Status ReadPreTokenizer(const Json& root, TokenizerSpec& spec) {
  const Json* pre = Member(root, "pre_tokenizer");
  if (pre == nullptr) return Unsupported("no pre_tokenizer (ByteLevel is required)");
  ASSIGN_OR_RETURN(const std::string type, GetType(*pre, "pre_tokenizer"));
  if (type != "ByteLevel") {
    return Unsupported(absl::StrCat("pre_tokenizer ", Quote(type), " (only ByteLevel)"));
  }
  if (Member(*pre, "add_prefix_space") == nullptr) {
    return absl::InvalidArgumentError("pre_tokenizer.add_prefix_space is missing");
  }
  ASSIGN_OR_RETURN(spec.add_prefix_space,
                   GetBool(*pre, "add_prefix_space", false, "pre_tokenizer"));
  ASSIGN_OR_RETURN(spec.use_regex, GetBool(*pre, "use_regex", true, "pre_tokenizer"));
  return absl::OkStatus();
}

// Decoding is always byte-level; the post-processor may only be the (id-neutral) ByteLevel one.
absl::Status ReadDecoderAndPostProcessor(const Json& root) {
  const Json* decoder = Member(root, "decoder");
  if (decoder == nullptr) return Unsupported("no decoder (ByteLevel is required)");
  ASSIGN_OR_RETURN(const std::string decoder_type, GetType(*decoder, "decoder"));
  if (decoder_type != "ByteLevel") {
    return Unsupported(absl::StrCat("decoder ", Quote(decoder_type), " (only ByteLevel)"));
  }
  if (const Json* post = Member(root, "post_processor")) {
    ASSIGN_OR_RETURN(const std::string post_type, GetType(*post, "post_processor"));
    if (post_type != "ByteLevel") {
      return Unsupported(absl::StrCat("post_processor ", Quote(post_type),
                                      " (it would add tokens; only ByteLevel is accepted)"));
    }
  }
  if (Member(root, "truncation") != nullptr) return Unsupported("truncation");
  if (Member(root, "padding") != nullptr) return Unsupported("padding");
  return absl::OkStatus();
}

// HF accepts merges as "left right" strings (split on the single space; "#version" lines are
// skipped) or as [left, right] pairs.
absl::Status ReadMerges(const Json& merges, TokenizerSpec& spec) {
  if (!merges.is_array()) return absl::InvalidArgumentError("model.merges must be an array");
  spec.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& merge = merges[i];
    if (merge.is_string()) {
      const auto& line = merge.get_ref<const std::string&>();
      if (line.starts_with("#version")) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("model.merges[", i, "] ", Quote(line), " is not \"left right\""));
      }
      spec.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      spec.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.merges[", i, "] must be \"left right\" or [left, right], not ", Describe(merge)));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadModel(const Json& root, TokenizerSpec& spec) {
  const Json* model = Member(root, "model");
  if (model == nullptr || !model->is_object()) {
    return absl::InvalidArgumentError("tokenizer.json has no \"model\" object");
  }
  if (const Json* type = Member(*model, "type"); type != nullptr && *type != "BPE") {
    return Unsupported(absl::StrCat("model type ", Describe(*type), " (only BPE)"));
  }
  if (Member(*model, "dropout") != nullptr) return Unsupported("BPE dropout");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const Json* value = Member(*model, affix);
        value != nullptr && !(value->is_string() && value->get_ref<const std::string&>().empty())) {
      return Unsupported(absl::StrCat("BPE ", affix, " ", Describe(*value)));
    }
  }
  // unk_token, fuse_unk and byte_fallback only act on characters missing from the vocab, which
  // byte-level BPE never has (BpeModel::Create insists on all 256 byte tokens).
  ASSIGN_OR_RETURN(spec.ignore_merges, GetBool(*model, "ignore_merges", false, "model"));

  const Json* vocab = Member(*model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return absl::InvalidArgumentError("model.vocab must be an object {token: id}");
  }
  spec.vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    ASSIGN_OR_RETURN(const int32_t id,
                     GetId(it.value(), absl::StrCat("model.vocab[", Quote(it.key()), "]")));
    spec.vocab[it.key()] = id;
  }
  const Json* merges = Member(*model, "merges");
  if (merges == nullptr) return absl::InvalidArgumentError("model.merges is missing");
  return ReadMerges(*merges, spec);
}

absl::Status ReadAddedTokens(const Json& root, TokenizerSpec& spec) {
  const Json* added = Member(root, "added_tokens");
  if (added == nullptr) return absl::OkStatus();
  if (!added->is_array()) return absl::InvalidArgumentError("added_tokens must be an array");
  for (size_t i = 0; i < added->size(); ++i) {
    const Json& entry = (*added)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!entry.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
    }
    AddedTokenSpec token;
    const Json* id = Member(entry, "id");
    const Json* content = Member(entry, "content");
    if (id == nullptr || content == nullptr || !content->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " needs \"id\" and \"content\""));
    }
    ASSIGN_OR_RETURN(token.id, GetId(*id, where));
    token.content = content->get<std::string>();
    ASSIGN_OR_RETURN(token.special, GetBool(entry, "special", false, where));
    ASSIGN_OR_RETURN(token.single_word, GetBool(entry, "single_word", false, where));
    ASSIGN_OR_RETURN(token.lstrip, GetBool(entry, "lstrip", false, where));
    ASSIGN_OR_RETURN(token.rstrip, GetBool(entry, "rstrip", false, where));
    ASSIGN_OR_RETURN(token.normalized, GetBool(entry, "normalized", !token.special, where));
    spec.added_tokens.push_back(std::move(token));
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenizerSpec> ReadSpec(const Json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json must be an object");
  TokenizerSpec spec;
  RETURN_IF_ERROR(ReadNormalizer(root, spec));
  RETURN_IF_ERROR(ReadPreTokenizer(root, spec));
  RETURN_IF_ERROR(ReadDecoderAndPostProcessor(root));
  RETURN_IF_ERROR(ReadModel(root, spec));
  RETURN_IF_ERROR(ReadAddedTokens(root, spec));
  return spec;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction.

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string contents,
                   ReadFile(path, {.max_bytes = kMaxTokenizerBytes, .regular_file_only = true}));
  return FromJson(contents, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json,
                                                               std::string_view source_name) {
  ASSIGN_OR_RETURN(const Json root, ParseStrictJson(json, source_name));
  absl::StatusOr<TokenizerSpec> spec = ReadSpec(root);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      spec.ok() ? Build(*spec) : absl::StatusOr<std::unique_ptr<Tokenizer>>(spec.status());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(Sv(source_name), ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

std::unique_ptr<Tokenizer> Tokenizer::ByteLevelDemo() {
  TokenizerSpec spec;
  for (int byte = 0; byte < 256; ++byte) {
    spec.vocab[byte_level::EncodeBytes(std::string(1, static_cast<char>(byte)))] = byte;
  }
  AddedTokenSpec eos;
  eos.id = 256;
  eos.content = kEndOfText;
  eos.special = true;
  eos.normalized = false;
  spec.added_tokens.push_back(eos);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Build(spec);
  // The spec is a constant of this file: failing to build it is a programming error.
  if (!tokenizer.ok()) std::abort();
  return *std::move(tokenizer);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Build(const TokenizerSpec& spec) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  tokenizer->normalize_nfc_ = spec.nfc;
  tokenizer->add_prefix_space_ = spec.add_prefix_space;
  tokenizer->use_regex_ = spec.use_regex;
  ASSIGN_OR_RETURN(tokenizer->model_,
                   BpeModel::Create(spec.vocab, spec.merges, spec.ignore_merges));

  // id -> token string, refusing two strings for one id (HF would keep an arbitrary one).
  int32_t max_id = -1;
  for (const auto& [token, id] : spec.vocab) max_id = std::max(max_id, id);
  // Ids index dense tables; a file with a few tokens at huge ids would make them enormous.
  const auto check_dense = [&](size_t token_count) {
    return static_cast<size_t>(max_id) < 2 * token_count + 1024
               ? absl::OkStatus()
               : absl::InvalidArgumentError(
                     absl::StrCat("unsupported tokenizer feature: sparse ids (", token_count,
                                  " tokens, largest id ", max_id, ")"));
  };
  RETURN_IF_ERROR(check_dense(spec.vocab.size() + spec.added_tokens.size()));
  std::vector<const std::string*> vocab_by_id(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [token, id] : spec.vocab) {
    const std::string*& slot = vocab_by_id[static_cast<size_t>(id)];
    if (slot != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("model.vocab gives id ", id, " to both ",
                                                     Quote(*slot), " and ", Quote(token)));
    }
    slot = &token;
  }

  // Added tokens, with HF's id assignment (AddedVocabulary::add_tokens): a content already known
  // (added before, or in the model vocab) keeps its id, a new one gets max(added ids) + 1, or the
  // model's vocab size for the first. The "id" written in the file is ignored, exactly as HF
  // ignores it (it only logs a warning), so the ids are the ones the model was trained with.
  absl::flat_hash_map<std::string, int32_t> added_ids;
  std::vector<const AddedTokenSpec*> accepted;
  absl::flat_hash_map<std::string, std::vector<const AddedTokenSpec*>> accepted_by_content;
  const auto vocab_count = static_cast<int32_t>(spec.vocab.size());
  int32_t max_added = -1;
  for (const AddedTokenSpec& token : spec.added_tokens) {
    if (token.content.empty()) continue;
    std::vector<const AddedTokenSpec*>& same_content = accepted_by_content[token.content];
    if (std::any_of(same_content.begin(), same_content.end(),
                    [&](const AddedTokenSpec* other) { return *other == token; })) {
      continue;  // an exact duplicate: HF ignores it
    }
    int32_t id;
    if (auto it = added_ids.find(token.content); it != added_ids.end()) {
      id = it->second;
    } else if (auto vocab_it = spec.vocab.find(token.content); vocab_it != spec.vocab.end()) {
      id = vocab_it->second;
    } else {
      id = max_added < 0 || max_added < vocab_count ? vocab_count : max_added + 1;
    }
    added_ids[token.content] = id;
    max_added = std::max(max_added, id);
    same_content.push_back(&token);
    accepted.push_back(&token);
    max_id = std::max(max_id, id);
  }
  RETURN_IF_ERROR(check_dense(spec.vocab.size() + added_ids.size()));

  tokenizer->tokens_.resize(static_cast<size_t>(max_id + 1));
  for (size_t id = 0; id < vocab_by_id.size(); ++id) {
    if (vocab_by_id[id] == nullptr) continue;
    TokenInfo& info = tokenizer->tokens_[id];
    info.content = *vocab_by_id[id];
    info.valid = true;
  }
  // HF's matching order: special tokens first, then the others, each in file order.
  std::vector<AddedTokenPattern> raw_patterns, normalized_patterns;
  for (const bool special : {true, false}) {
    for (const AddedTokenSpec* token : accepted) {
      if (token->special != special) continue;
      const int32_t id = added_ids.at(token->content);
      TokenInfo& info = tokenizer->tokens_[static_cast<size_t>(id)];
      info.content = token->content;  // the added token's content wins, as in HF's id_to_token
      info.valid = true;
      info.special = info.special || token->special;
      AddedTokenPattern pattern{token->content, id, token->single_word, token->lstrip,
                                token->rstrip};
      if (token->normalized) {
        if (spec.nfc) pattern.content = unicode::Nfc(pattern.content);
        normalized_patterns.push_back(std::move(pattern));
      } else {
        raw_patterns.push_back(std::move(pattern));
      }
    }
  }
  for (TokenInfo& info : tokenizer->tokens_) {
    if (info.valid) info.bytes = byte_level::DecodeToken(info.content);
  }
  tokenizer->added_raw_ = std::make_unique<AddedVocabulary>(std::move(raw_patterns));
  tokenizer->added_normalized_ = std::make_unique<AddedVocabulary>(std::move(normalized_patterns));

  if (auto it = added_ids.find(kEndOfText); it != added_ids.end()) {
    tokenizer->eos_token_id_ = it->second;
  } else if (auto vocab_it = spec.vocab.find(kEndOfText); vocab_it != spec.vocab.end()) {
    tokenizer->eos_token_id_ = vocab_it->second;
  }
  return tokenizer;
}

// ---------------------------------------------------------------------------------------------
// Encoding.

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text) const {
  RETURN_IF_ERROR(utf8::Validate(text));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  std::vector<AddedVocabulary::Split> splits;
  added_raw_->FindMatches(text, splits);
  std::string normalized;
  for (const AddedVocabulary::Split& split : splits) {
    if (split.id != AddedVocabulary::kNoToken) {
      ids.push_back(split.id);
      continue;
    }
    const std::string_view piece = text.substr(split.begin, split.end - split.begin);
    if (piece.empty()) continue;
    // HF normalizes each piece between raw added tokens separately.
    if (normalize_nfc_ && !unicode::IsNfcQuickYes(piece)) {
      normalized.clear();
      unicode::AppendNfc(piece, normalized);
      EncodeNormalizedPiece(normalized, ids);
    } else {
      EncodeNormalizedPiece(piece, ids);
    }
  }
  return ids;
}

void Tokenizer::EncodeNormalizedPiece(std::string_view normalized,
                                      std::vector<int32_t>& ids) const {
  if (added_normalized_->empty()) {
    EncodeOrdinaryText(normalized, ids);
    return;
  }
  std::vector<AddedVocabulary::Split> splits;
  added_normalized_->FindMatches(normalized, splits);
  for (const AddedVocabulary::Split& split : splits) {
    if (split.id != AddedVocabulary::kNoToken) {
      ids.push_back(split.id);
    } else if (split.end > split.begin) {
      EncodeOrdinaryText(normalized.substr(split.begin, split.end - split.begin), ids);
    }
  }
}

void Tokenizer::EncodeOrdinaryText(std::string_view text, std::vector<int32_t>& ids) const {
  std::string prefixed;
  if (add_prefix_space_ && text.front() != ' ') {
    prefixed = absl::StrCat(" ", Sv(text));
    text = prefixed;
  }
  if (!use_regex_) {
    model_->Encode(text, ids);
    return;
  }
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = NextPretokenEnd(text, pos);
    model_->Encode(text.substr(pos, end - pos), ids);
    pos = end;
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding and vocabulary queries.

bool Tokenizer::IsValidId(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < tokens_.size() &&
         tokens_[static_cast<size_t>(id)].valid;
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  return IsValidId(id) ? std::string_view(tokens_[static_cast<size_t>(id)].bytes)
                       : std::string_view();
}

std::string_view Tokenizer::TokenString(int32_t id) const {
  return IsValidId(id) ? std::string_view(tokens_[static_cast<size_t>(id)].content)
                       : std::string_view();
}

bool Tokenizer::IsSpecialToken(int32_t id) const {
  return IsValidId(id) && tokens_[static_cast<size_t>(id)].special;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string text;
  for (const int32_t id : ids) text.append(TokenBytes(id));
  return text;
}

absl::StatusOr<std::string> Tokenizer::TryDecode(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!IsValidId(ids[i])) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids[i], " at position ", i,
                                                     " is not in the vocabulary (size ",
                                                     vocab_size(), ")"));
    }
  }
  return Decode(ids);
}

std::string Tokenizer::DecodeLossy(std::span<const int32_t> ids) const {
  return utf8::Lossy(Decode(ids));
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(tokens_.size()); }

std::optional<int32_t> Tokenizer::eos_token_id() const { return eos_token_id_; }

}  // namespace sinkserve
