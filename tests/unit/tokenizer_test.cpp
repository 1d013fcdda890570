// Tokenizer tests. The ids always come from Hugging Face `tokenizers` (fixtures written by
// tests/fixtures/tokenizer/make_tokenizer_goldens.py), never from this implementation.
#include "engine/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "common/base/utf8.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

using Json = nlohmann::json;
using ::sinkserve::testing::DataPath;
using ::sinkserve::testing::FixturePath;

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  EXPECT_TRUE(file) << "cannot open " << path;
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

Json ReadJson(const std::string& path) { return Json::parse(ReadFile(path)); }

std::vector<int32_t> Ids(const Json& array) { return array.get<std::vector<int32_t>>(); }

// Escaped, for readable failure messages.
std::string Show(std::string_view text) {
  std::string out;
  for (const unsigned char c : text.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\x%02X", c);
      out += buffer;
    }
  }
  return text.size() > 200 ? out + "..." : out;
}

// Describes the first difference between two id sequences, with token strings.
std::string FirstDifference(const Tokenizer& tokenizer, const std::vector<int32_t>& got,
                            const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  std::ostringstream out;
  out << "sizes " << got.size() << " vs HF " << want.size() << ", first difference at " << i;
  const auto show = [&](const std::vector<int32_t>& ids) {
    std::ostringstream s;
    for (size_t k = i; k < ids.size() && k < i + 6; ++k) {
      s << "[" << ids[k] << " '" << tokenizer.TokenString(ids[k]) << "'] ";
    }
    return s.str();
  };
  out << "\n  ours: " << show(got) << "\n  HF:   " << show(want);
  return out.str();
}

bool IsValidUtf8(std::string_view text) { return utf8::Validate(text).ok(); }

// ---------------------------------------------------------------------------------------------
// The Pythia tokenizer, loaded once.

class PythiaTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = Tokenizer::FromFile(DataPath("tokenizer/tokenizer.json"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  // Reads the golden id records of pythia_goldens.bin in order.
  class GoldenReader {
   public:
    GoldenReader() : data_(ReadFile(FixturePath("tokenizer/pythia_goldens.bin"))) {
      EXPECT_EQ(data_.substr(0, 8), "SSTKGLD1");
      pos_ = 8;
    }
    std::vector<int32_t> Next() {
      uint32_t count = 0;
      EXPECT_LE(pos_ + 4, data_.size());
      std::memcpy(&count, data_.data() + pos_, 4);
      pos_ += 4;
      std::vector<int32_t> ids(count);
      EXPECT_LE(pos_ + 2 * size_t{count}, data_.size());
      for (uint32_t i = 0; i < count; ++i) {
        uint16_t id;
        std::memcpy(&id, data_.data() + pos_ + 2 * i, 2);
        ids[i] = id;
      }
      pos_ += 2 * size_t{count};
      return ids;
    }
    bool AtEnd() const { return pos_ == data_.size(); }

   private:
    std::string data_;
    size_t pos_;
  };

  void ExpectWholeText(const std::string& text, const std::vector<int32_t>& want,
                       const std::string& name) {
    auto ids = tokenizer_->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_TRUE(*ids == want) << name << ": " << FirstDifference(*tokenizer_, *ids, want);
    // The corpora are NFC already (the generator checks), so decoding gives the text back.
    EXPECT_TRUE(tokenizer_->Decode(*ids) == text) << name << ": decode(encode(x)) != x";
  }

  static const Tokenizer* tokenizer_;
};

const Tokenizer* PythiaTokenizerTest::tokenizer_ = nullptr;

TEST_F(PythiaTokenizerTest, Basics) {
  EXPECT_EQ(tokenizer_->vocab_size(), 50277);
  EXPECT_EQ(tokenizer_->eos_token_id(), 0);
  EXPECT_EQ(tokenizer_->TokenBytes(0), "<|endoftext|>");
  EXPECT_EQ(tokenizer_->TokenBytes(50276), "  ");  // normalized added token
  EXPECT_EQ(tokenizer_->TokenBytes(50254), std::string(24, ' '));
  EXPECT_TRUE(tokenizer_->IsSpecialToken(0));
  EXPECT_TRUE(tokenizer_->IsSpecialToken(1));
  EXPECT_FALSE(tokenizer_->IsSpecialToken(50276));
  EXPECT_FALSE(tokenizer_->IsValidId(50277));
  EXPECT_FALSE(tokenizer_->IsValidId(-1));
  EXPECT_EQ(tokenizer_->TokenBytes(50277), "");
}

// Every code path in the corpus goldens.

TEST_F(PythiaTokenizerTest, WikiLinesWholeWikiAndBooksMatchHf) {
  const Json index = ReadJson(FixturePath("tokenizer/pythia_goldens.json"));
  GoldenReader goldens;
  int texts_checked = 0;
  for (const Json& group : index["groups"]) {
    const std::string source = group["source"];
    const std::string text = ReadFile(DataPath(source));
    if (group["split"] == "lines") {
      std::vector<std::string> lines;
      for (size_t begin = 0; begin < text.size();) {
        size_t end = text.find('\n', begin);
        if (end == std::string::npos) end = text.size();
        if (end > begin) lines.push_back(text.substr(begin, end - begin));
        begin = end + 1;
      }
      ASSERT_EQ(lines.size(), group["records"].get<size_t>()) << source;
      int mismatches = 0;
      for (size_t i = 0; i < lines.size(); ++i) {
        const std::vector<int32_t> want = goldens.Next();
        auto ids = tokenizer_->Encode(lines[i]);
        ASSERT_TRUE(ids.ok()) << ids.status();
        if (*ids != want && ++mismatches <= 5) {
          ADD_FAILURE() << source << " line " << i << " '" << Show(lines[i])
                        << "': " << FirstDifference(*tokenizer_, *ids, want);
        }
        EXPECT_EQ(tokenizer_->Decode(*ids), lines[i]) << "line " << i;
        ++texts_checked;
      }
      EXPECT_EQ(mismatches, 0) << "lines differing from HF";
    } else {
      ASSERT_EQ(text.size(), group["source_bytes"].get<size_t>())
          << source << " changed since the goldens were made; rerun make_tokenizer_goldens.py";
      ExpectWholeText(text, goldens.Next(), source);
      ++texts_checked;
    }
  }
  EXPECT_TRUE(goldens.AtEnd());
  EXPECT_EQ(texts_checked, 2891 + 3);
}

TEST_F(PythiaTokenizerTest, TortureSetMatchesHf) {
  const Json torture = ReadJson(FixturePath("tokenizer/torture.json"));
  ASSERT_GE(torture["cases"].size(), 40u);
  for (const Json& c : torture["cases"]) {
    const std::string name = c["name"];
    const std::string text = c["text"];
    const std::vector<int32_t> want = Ids(c["ids"]);
    auto ids = tokenizer_->Encode(text);
    ASSERT_TRUE(ids.ok()) << name << ": " << ids.status();
    EXPECT_TRUE(*ids == want) << name << ": " << FirstDifference(*tokenizer_, *ids, want);
    // decode(encode(x)) == NFC(x), both as HF computes them.
    EXPECT_EQ(tokenizer_->Decode(*ids), c["decoded"].get<std::string>()) << name;
    EXPECT_EQ(tokenizer_->Decode(*ids), c["nfc"].get<std::string>()) << name;
    EXPECT_EQ(unicode::Nfc(text), c["nfc"].get<std::string>()) << name;
  }
}

TEST_F(PythiaTokenizerTest, LossyDecodeMatchesHf) {
  const Json torture = ReadJson(FixturePath("tokenizer/torture.json"));
  ASSERT_GE(torture["lossy_decodes"].size(), 100u);
  int invalid = 0;
  for (const Json& c : torture["lossy_decodes"]) {
    const std::vector<int32_t> ids = Ids(c["ids"]);
    const std::string want = c["decoded"];
    EXPECT_EQ(tokenizer_->DecodeLossy(ids), want) << Show(tokenizer_->Decode(ids));
    invalid += !IsValidUtf8(tokenizer_->Decode(ids));
  }
  EXPECT_GT(invalid, 50) << "the fixture should mostly hold invalid byte sequences";
}

// unicode_data.cpp against HF, end to end: NFC, the pre-token split, and ids, on strings built
// around every boundary of the regex character classes and on random mark/composite soups.
TEST_F(PythiaTokenizerTest, UnicodeSamplesMatchHf) {
  const Json samples = ReadJson(FixturePath("tokenizer/unicode_samples.json"));
  ASSERT_GE(samples["samples"].size(), 500u);
  int failures = 0;
  for (const Json& s : samples["samples"]) {
    const std::string text = s["text"];
    const std::string nfc = s["nfc"];
    const std::vector<std::string> want_pretokens = s["pretokens"];
    const std::string got_nfc = unicode::Nfc(text);
    std::vector<std::string> got_pretokens;
    for (std::string_view piece : SplitPretokens(nfc)) got_pretokens.emplace_back(piece);
    auto ids = tokenizer_->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    const bool ok = got_nfc == nfc && got_pretokens == want_pretokens && *ids == Ids(s["ids"]);
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << "'" << Show(text) << "': nfc " << (got_nfc == nfc) << ", pretokens "
                    << (got_pretokens == want_pretokens) << ", ids " << (*ids == Ids(s["ids"]));
    }
  }
  EXPECT_EQ(failures, 0);
}

// The fast paths assume ASCII is never NFC-unstable.
TEST(UnicodeTest, AsciiIsNfcStableAndClassifiedLikeOniguruma) {
  for (char32_t c = 0; c < 128; ++c) {
    EXPECT_EQ(unicode::CharFlags(c) & unicode::kCharFlagNfcUnstable, 0) << static_cast<int>(c);
  }
  EXPECT_TRUE(unicode::CharFlags('a') & unicode::kCharFlagLetter);
  EXPECT_TRUE(unicode::CharFlags('7') & unicode::kCharFlagNumber);
  EXPECT_TRUE(unicode::CharFlags('\t') & unicode::kCharFlagSpace);
  EXPECT_TRUE(unicode::CharFlags(0x3000) & unicode::kCharFlagSpace);
  EXPECT_EQ(unicode::CharFlags(0x200B) & unicode::kCharFlagSpace, 0);  // ZWSP is not \s
  EXPECT_EQ(unicode::CharFlags(0x110000), 0);
  EXPECT_EQ(unicode::Nfc("e\u0301"), "\u00e9");
  EXPECT_EQ(unicode::Nfc("\u1100\u1161\u11A8"), "\uAC01");
}

TEST(PretokenizerTest, Gpt2SplitByHand) {
  const auto split = [](std::string_view text) {
    std::vector<std::string> out;
    for (std::string_view piece : SplitPretokens(text)) out.emplace_back(piece);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split("it's 'S"), (V{"it", "'s", " '", "S"}));
  EXPECT_EQ(split("a  b"), (V{"a", " ", " b"}));  // \s+(?!\S) leaves the last space
  EXPECT_EQ(split("a \n b"), (V{"a", " \n", " b"}));
  EXPECT_EQ(split("a\nb"), (V{"a", "\n", "b"}));  // single \s before \S: plain \s+
  EXPECT_EQ(split("end  "), (V{"end", "  "}));    // a run at the end is taken whole
  EXPECT_EQ(split("x 123!!"), (V{"x", " 123", "!!"}));
  EXPECT_EQ(split(""), V{});
}

// ---------------------------------------------------------------------------------------------
// Variants of the Pythia tokenizer.json (features Pythia does not use), against HF.

// Mirrors apply_patch() in make_tokenizer_goldens.py.
Json ApplyPatch(Json config, const Json& patch) {
  if (patch.contains("set")) {
    for (const auto& [pointer, value] : patch["set"].items()) {
      config[Json::json_pointer(pointer)] = value;
    }
  }
  if (patch.contains("append_added_tokens")) {
    int next_id = 0;
    for (const Json& token : config["added_tokens"])
      next_id = std::max(next_id, token["id"].get<int>() + 1);
    for (Json token : patch["append_added_tokens"]) {
      token["id"] = next_id++;
      config["added_tokens"].push_back(token);
    }
  }
  if (patch.value("merges_as_pairs", false)) {
    Json pairs = Json::array();
    for (const Json& merge : config["model"]["merges"]) {
      const std::string line = merge;
      const size_t space = line.find(' ');
      pairs.push_back(Json::array({line.substr(0, space), line.substr(space + 1)}));
    }
    config["model"]["merges"] = pairs;
  }
  return config;
}

TEST(TokenizerVariantsTest, MatchHf) {
  const Json base = ReadJson(DataPath("tokenizer/tokenizer.json"));
  const Json variants = ReadJson(FixturePath("tokenizer/variants.json"));
  ASSERT_GE(variants["variants"].size(), 6u);
  for (const Json& variant : variants["variants"]) {
    const std::string name = variant["name"];
    auto tokenizer = Tokenizer::FromJson(ApplyPatch(base, variant["patch"]).dump(), name);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    int failures = 0;
    for (const Json& c : variant["cases"]) {
      const std::string text = c["text"];
      const std::vector<int32_t> want = Ids(c["ids"]);
      auto ids = (*tokenizer)->Encode(text);
      ASSERT_TRUE(ids.ok()) << ids.status();
      if (*ids != want && ++failures <= 3) {
        ADD_FAILURE() << name << " '" << Show(text)
                      << "': " << FirstDifference(**tokenizer, *ids, want);
      }
      EXPECT_EQ((*tokenizer)->DecodeLossy(*ids), c["decoded"].get<std::string>()) << name;
    }
    EXPECT_EQ(failures, 0) << name;
  }
}

// ---------------------------------------------------------------------------------------------
// Errors.

TEST_F(PythiaTokenizerTest, InvalidUtf8IsRefusedWithOffset) {
  struct Case {
    std::string text;
    size_t offset;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"ab\x80", 2, "continuation"},        // lone continuation byte
      {"\xC0\xAF", 0, "overlong"},          // overlong '/'
      {"x\xE0\x80\xAF", 1, "overlong"},     // overlong 3-byte
      {"\xF0\x80\x80\xAF", 0, "overlong"},  // overlong 4-byte
      {"ok \xED\xA0\x80", 3, "surrogate"},  // U+D800
      {"\xED\xBF\xBF", 0, "surrogate"},     // U+DFFF
      {"\xF4\x90\x80\x80", 0, "U+10FFFF"},  // U+110000
      {"\xFF", 0, "U+10FFFF"},
      {"abc\xE2\x82", 3, "truncated"},  // truncated at the end
      {"\xE2\x82"
       "abc",
       0, "truncated"},  // truncated before ASCII
      {"\xF0\x9F\x98", 0, "truncated"},
      {std::string("a\0b", 3) + "\xC3", 3, "truncated"},
  };
  for (const Case& c : cases) {
    auto ids = tokenizer_->Encode(c.text);
    ASSERT_FALSE(ids.ok()) << Show(c.text);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(ids.status().message());
    EXPECT_NE(message.find("invalid UTF-8"), std::string::npos) << message;
    EXPECT_NE(message.find("byte offset " + std::to_string(c.offset)), std::string::npos)
        << message;
    EXPECT_NE(message.find(c.reason), std::string::npos) << message;
  }
  EXPECT_TRUE(tokenizer_->Encode(std::string("nul\0ok", 6)).ok());
}

TEST_F(PythiaTokenizerTest, TryDecodeReportsInvalidIds) {
  const std::vector<int32_t> ids = {15496, -3, 50277};
  auto text = tokenizer_->TryDecode(ids);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("-3"), absl::string_view::npos);
  EXPECT_EQ(tokenizer_->Decode(ids), tokenizer_->TokenBytes(15496));  // invalid ids skipped
}

TEST(TokenizerJsonTest, MalformedOrUnsupportedJsonIsAnErrorNotACrash) {
  const Json base = ReadJson(DataPath("tokenizer/tokenizer.json"));
  const auto with = [&](const char* pointer, const Json& value) {
    Json config = base;
    config[Json::json_pointer(pointer)] = value;
    return config.dump();
  };
  Json bad_merge = base;
  bad_merge["model"]["merges"].push_back("Ġqqq zzzz");
  Json missing_byte = base;
  missing_byte["model"]["vocab"].erase("a");

  struct Case {
    std::string json;
    const char* expected;  // in the message
  };
  const std::vector<Case> cases = {
      {"", "invalid JSON"},
      {"{", "invalid JSON"},
      {"[]", "must be an object"},
      {"null", "must be an object"},
      {"{\"model\": 5}", "pre_tokenizer"},
      {std::string(100000, '[') + std::string(100000, ']'), "nests deeper"},
      {std::string(65, '[') + std::string(65, ']'), "nests deeper than 64 levels"},
      {std::string(64, '[') + std::string(64, ']'), "must be an object"},  // within the cap
      {"\xEF\xBB\xBF" + base.dump(), "byte order mark"},
      {base.dump() + std::string(1, '\0'), "NUL byte"},
      {R"({"model": {"vocab": {"a": 0, "a": 1}}})", "duplicate key 'a' in 'model.vocab'"},
      {R"({"added_tokens": [{"id": 0, "id": 1}]})", "duplicate key 'id' in 'added_tokens[0]'"},
      {"\"\xFF\"", "invalid UTF-8"},
      {with("/model/type", "WordPiece"), "model type"},
      {with("/normalizer", Json{{"type", "Lowercase"}}), "normalizer 'Lowercase'"},
      {with("/pre_tokenizer", Json{{"type", "Whitespace"}}), "pre_tokenizer 'Whitespace'"},
      {with("/decoder", nullptr), "decoder"},
      {with("/post_processor", Json{{"type", "TemplateProcessing"}}), "TemplateProcessing"},
      {with("/truncation", Json{{"max_length", 5}}), "truncation"},
      {with("/padding", Json{{"pad_id", 0}}), "padding"},
      {with("/model/dropout", 0.1), "dropout"},
      {with("/model/continuing_subword_prefix", "##"), "continuing_subword_prefix"},
      {with("/model/merges", 7), "merges"},
      {with("/model/merges/0", "a b c"), "left right"},
      {with("/model/merges/0", Json::array({1, 2})), "merges[0]"},
      {with("/model/vocab/Ġthe", -4), "token id"},
      {with("/model/vocab/Ġthe", 1ll << 40), "token id"},
      {with("/model/vocab/Ġthe", 1 << 22), "sparse ids"},
      {with("/model/vocab/Ġthe", "x"), "token id"},
      {with("/model/vocab/Ġthe", 5), "both"},
      {with("/added_tokens/0/lstrip", "yes"), "lstrip"},
      {with("/added_tokens", Json{{"a", 1}}), "added_tokens"},
      {bad_merge.dump(), "not in the vocab"},
      {missing_byte.dump(), "byte-level token"},
  };
  for (const Case& c : cases) {
    auto tokenizer = Tokenizer::FromJson(c.json, "test.json");
    ASSERT_FALSE(tokenizer.ok()) << c.expected;
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << tokenizer.status();
    const std::string message(tokenizer.status().message());
    EXPECT_EQ(message.rfind("test.json: ", 0), 0u) << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
  }
  EXPECT_EQ(Tokenizer::FromFile("/nonexistent/tokenizer.json").status().code(),
            absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------------------------
// Incremental detokenization.

// Pushes ids one at a time; every piece must be valid UTF-8 and the whole must equal HF's lossy
// decode (Decode itself when that is valid).
void ExpectStreamsLikeDecode(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  IncrementalDetokenizer detokenizer(tokenizer);
  std::string streamed;
  for (const int32_t id : ids) {
    const std::string piece = detokenizer.Push(id);
    ASSERT_TRUE(IsValidUtf8(piece)) << "Push emitted a broken UTF-8 sequence: " << Show(piece);
    streamed += piece;
  }
  const std::string rest = detokenizer.Finish();
  ASSERT_TRUE(IsValidUtf8(rest)) << Show(rest);
  streamed += rest;
  EXPECT_EQ(streamed, tokenizer.DecodeLossy(ids));
  const std::string exact = tokenizer.Decode(ids);
  if (IsValidUtf8(exact)) {
    EXPECT_EQ(streamed, exact);
  }
}

TEST_F(PythiaTokenizerTest, IncrementalDetokenizerOnTortureAndWiki) {
  const Json torture = ReadJson(FixturePath("tokenizer/torture.json"));
  for (const Json& c : torture["cases"]) ExpectStreamsLikeDecode(*tokenizer_, Ids(c["ids"]));
  for (const Json& c : torture["lossy_decodes"])
    ExpectStreamsLikeDecode(*tokenizer_, Ids(c["ids"]));
  const std::string wiki = ReadFile(DataPath("wikitext-2-raw/wiki.test.raw"));
  auto ids = tokenizer_->Encode(wiki.substr(0, 200000));
  ASSERT_TRUE(ids.ok());
  ExpectStreamsLikeDecode(*tokenizer_, *ids);
}

TEST_F(PythiaTokenizerTest, IncrementalDetokenizerHoldsBackSplitEmoji) {
  // "😀" is F0 9F 98 80; Pythia spells it as two tokens, each half a character.
  auto ids = tokenizer_->Encode("😀");
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 2u);
  IncrementalDetokenizer detokenizer(*tokenizer_);
  for (size_t i = 0; i + 1 < ids->size(); ++i) EXPECT_EQ(detokenizer.Push((*ids)[i]), "");
  EXPECT_EQ(detokenizer.Push(ids->back()), "😀");
  EXPECT_EQ(detokenizer.Finish(), "");

  // Byte by byte through the demo tokenizer, with a stray continuation byte in between.
  auto demo = Tokenizer::ByteLevelDemo();
  IncrementalDetokenizer bytes(*demo);
  EXPECT_EQ(bytes.Push(0xF0), "");
  EXPECT_EQ(bytes.Push(0x9F), "");
  EXPECT_EQ(bytes.Push(0x98), "");
  EXPECT_EQ(bytes.Push(0x80), "😀");
  EXPECT_EQ(bytes.Push(0x80), "\uFFFD");  // can never complete: out at once
  EXPECT_EQ(bytes.Push(0xE2), "");
  EXPECT_EQ(bytes.Push('a'), "\uFFFDa");  // the held-back lead turned out invalid
  EXPECT_EQ(bytes.Push(0xE2), "");
  EXPECT_EQ(bytes.Push(0x82), "");
  EXPECT_EQ(bytes.Finish(), "\uFFFD");  // one U+FFFD for the truncated sequence
  EXPECT_EQ(bytes.Push(256), "<|endoftext|>");
}

TEST(IncrementalDetokenizerTest, RandomByteStreams) {
  auto demo = Tokenizer::ByteLevelDemo();
  std::mt19937 rng(5);
  for (int round = 0; round < 2000; ++round) {
    std::vector<int32_t> ids(rng() % 24);
    for (int32_t& id : ids) {
      const uint32_t pick = rng() % 4;
      id = pick == 0   ? static_cast<int32_t>(0x80 + rng() % 64)  // continuation
           : pick == 1 ? static_cast<int32_t>(0xC0 + rng() % 64)  // lead (or invalid)
           : pick == 2 ? static_cast<int32_t>(rng() % 128)
                       : static_cast<int32_t>(rng() % 257);
    }
    ExpectStreamsLikeDecode(*demo, ids);
  }
}

// ---------------------------------------------------------------------------------------------
// The demo tokenizer.

TEST(ByteLevelDemoTest, BytesRoundTrip) {
  auto demo = Tokenizer::ByteLevelDemo();
  EXPECT_EQ(demo->vocab_size(), 257);
  EXPECT_EQ(demo->eos_token_id(), 256);
  for (int byte = 0; byte < 256; ++byte) {
    EXPECT_EQ(demo->TokenBytes(byte), std::string(1, static_cast<char>(byte)));
  }
  const std::string text = "Héllo  wörld\n\t😀 e\u0301 <|endoftext|>!";
  auto ids = demo->Encode(text);
  ASSERT_TRUE(ids.ok());
  std::vector<int32_t> want;
  const std::string eos = "<|endoftext|>";
  const size_t eos_at = text.find(eos);
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == eos_at) {
      want.push_back(256);
      i += eos.size() - 1;
    } else {
      want.push_back(static_cast<uint8_t>(text[i]));
    }
  }
  EXPECT_EQ(*ids, want);
  EXPECT_EQ(demo->Decode(*ids), text);  // no normalizer: NFD input stays NFD
}

// ---------------------------------------------------------------------------------------------
// Concurrency: the pre-token cache is shared.

TEST_F(PythiaTokenizerTest, ConcurrentEncodesAgree) {
  const std::string wiki = ReadFile(DataPath("wikitext-2-raw/wiki.test.raw")).substr(0, 300000);
  std::vector<int32_t> results[2];
  std::thread threads[2];
  for (int t = 0; t < 2; ++t) {
    threads[t] = std::thread([&, t] { results[t] = *tokenizer_->Encode(wiki); });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(results[0], results[1]);
}

}  // namespace
}  // namespace sinkserve
