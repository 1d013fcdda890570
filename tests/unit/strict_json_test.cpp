// ParseStrictJson against nlohmann's own parser (the reference for what JSON means): on fresh
// random documents both give the same values of the same types, and on random corruptions of
// them the strict parser accepts nothing nlohmann refuses. Then its own refusals, each naming
// the source and where in the document.
#include "common/base/strict_json.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

using Json = nlohmann::json;

// Same value, same type at every node (nlohmann's == would call 1 and 1.0 equal).
void ExpectSame(const Json& got, const Json& want, const std::string& where = "root") {
  ASSERT_EQ(got.type(), want.type()) << where;
  if (got.is_object()) {
    ASSERT_EQ(got.size(), want.size()) << where;
    for (const auto& [key, value] : want.items()) {
      ASSERT_TRUE(got.contains(key)) << where << "." << key;
      ExpectSame(got.at(key), value, where + "." + key);
    }
  } else if (got.is_array()) {
    ASSERT_EQ(got.size(), want.size()) << where;
    for (size_t i = 0; i < want.size(); ++i) {
      ExpectSame(got[i], want[i], where + "[" + std::to_string(i) + "]");
    }
  } else {
    ASSERT_EQ(got.dump(), want.dump()) << where;
  }
}

class RandomJson {
 public:
  explicit RandomJson(uint64_t seed) : rng_(seed) {}

  // JSON text of a random document, written by hand so that it holds what a dump would not:
  // -0, exponents, escapes, whitespace.
  std::string Text(int depth = 0) {
    const int kind = static_cast<int>(rng_() % (depth >= 6 ? 5 : 7));
    switch (kind) {
      case 0:
        return Pick({"null", "true", "false"});
      case 1:
        return Pick({"0", "-0", "7", "-12", "18446744073709551615", "9223372036854775807",
                     "-9223372036854775808", "18446744073709551616"});
      case 2:
        return Pick({"1.5", "-0.0", "1e3", "2E-5", "1.7976931348623157e308", "0.1"});
      case 3:
        return String();
      case 4:
        return String();
      case 5: {
        std::string text = "[";
        const int n = static_cast<int>(rng_() % 5);
        for (int i = 0; i < n; ++i) {
          if (i > 0) text += ", ";
          text += Text(depth + 1);
        }
        text += "]";
        return text;
      }
      default: {
        std::string text = "{";
        const int n = static_cast<int>(rng_() % 5);
        for (int i = 0; i < n; ++i) {
          // Distinct keys: an index makes each unique.
          if (i > 0) text += ",\n ";
          text += String(std::to_string(i));
          text += ": ";
          text += Text(depth + 1);
        }
        text += "}";
        return text;
      }
    }
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  std::string Pick(std::initializer_list<const char*> options) {
    return *(options.begin() + rng_() % options.size());
  }
  std::string String(const std::string& suffix = "") {
    static const char* const kPieces[] = {
        "a", "key", "\\n", "\\\"", "\\u00e9", "\\u0000", "\\ud83d\\ude00",
        "é", "字",  "😀",   " ",    "\\/"};
    std::string text = "\"";
    const int n = static_cast<int>(rng_() % 4);
    for (int i = 0; i < n; ++i) text += kPieces[rng_() % std::size(kPieces)];
    text += suffix;
    text += "\"";
    return text;
  }

  std::mt19937_64 rng_;
};

TEST(StrictJsonTest, AgreesWithNlohmannOnRandomDocumentsAndCorruptions) {
  RandomJson random(testing::TestSeed());
  for (int round = 0; round < 2000; ++round) {
    const std::string text = random.Text();
    SCOPED_TRACE(text);
    const Json want = Json::parse(text);  // throws (fails the test) if the generator is wrong
    absl::StatusOr<Json> got = ParseStrictJson(text, "doc.json");
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectSame(*got, want);

    // A corrupted copy: what nlohmann refuses, the strict parser refuses too; what both accept
    // is the same document.
    std::string bad = text;
    for (int flips = 1 + static_cast<int>(random.rng()() % 3); flips > 0 && !bad.empty(); --flips) {
      bad[random.rng()() % bad.size()] = static_cast<char>(random.rng()() % 128);
    }
    if (random.rng()() % 4 == 0) bad.resize(random.rng()() % (bad.size() + 1));
    const Json reference = Json::parse(bad, nullptr, /*allow_exceptions=*/false);
    absl::StatusOr<Json> strict = ParseStrictJson(bad, "doc.json");
    if (reference.is_discarded()) {
      EXPECT_FALSE(strict.ok()) << "accepted what nlohmann refuses: " << bad;
    } else if (strict.ok()) {
      ExpectSame(*strict, reference);
    }
    if (!strict.ok()) {
      EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(strict.status().message().rfind("doc.json: ", 0), 0u) << strict.status();
    }
  }
}

TEST(StrictJsonTest, RefusalsNameTheSourceAndThePlace) {
  struct Case {
    std::string text, expected;
  };
  const Case cases[] = {
      {R"({"a": 1, "a": 1})", "duplicate key 'a'"},
      {R"({"a": {"b": [0, {"c": 1, "d": 2, "c": 3}]}})", "duplicate key 'c' in 'a.b[1]'"},
      {R"({"\n\u0001": 1, "\n\u0001": 2})", "duplicate key '\\n\\x01'"},  // escaped
      {"\xEF\xBB\xBF{}", "JSON starts with a byte order mark"},
      {std::string("{}\0", 3), "JSON contains a NUL byte at offset 2"},
      {std::string("\"a\0b\"", 5), "JSON contains a NUL byte at offset 2"},
      {"\"\xED\xA0\x80\"", "invalid UTF-8 at byte offset 1"},  // a surrogate
      {std::string(65, '[') + std::string(65, ']'), "JSON nests deeper than 64 levels"},
      {R"({"a": [1, 2,]})", "invalid JSON at byte "},
      {R"({"a": {"b": tru}})", "(in 'a.b')"},
      {"{} {}", "invalid JSON"},
      {R"({"a": {x}})", "(in 'a')"},  // before the inner object's first key
      {"{/* no */}", "invalid JSON"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Json> parsed = ParseStrictJson(c.text, "doc.json");
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(parsed.status().message());
    EXPECT_EQ(message.rfind("doc.json: ", 0), 0u) << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
  }
  // Escaped NULs are text, not NUL bytes; the same key in two objects is not a duplicate;
  // trailing whitespace is padding.
  absl::StatusOr<Json> fine = ParseStrictJson(R"({"a": {"k": "\u0000"}, "b": {"k": 1}}  )", "x");
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ((*fine)["a"]["k"].get<std::string>(), std::string(1, '\0'));
  // 64 levels are within the cap.
  EXPECT_TRUE(ParseStrictJson(std::string(64, '[') + std::string(64, ']'), "x").ok());
}

}  // namespace
}  // namespace sinkserve
