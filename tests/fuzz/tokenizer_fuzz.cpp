// libFuzzer target for the tokenizer: Encode on arbitrary bytes with the real Pythia tokenizer
// (loaded once), checking its promises:
//   * invalid UTF-8 is refused with InvalidArgument "invalid UTF-8 ...", valid UTF-8 never is;
//   * every id is valid, Decode(Encode(x)) == NFC(x) (== x without a normalizer), and encoding
//     that again gives the same ids;
//   * NFC is idempotent;
//   * the same bytes read as token ids stream through IncrementalDetokenizer in valid UTF-8
//     pieces that add up to DecodeLossy;
//   * FromJson on the bytes fails cleanly or loads (inputs starting with '{').
//
// The tokenizer comes from $SINKSERVE_TOKENIZER_JSON, else the shared data next to the
// repository (SINKSERVE_SHARED_DATA/tokenizer/tokenizer.json), else the ByteLevelDemo tokenizer.
//
//   ./tokenizer_fuzz -max_total_time=60 corpus-work tests/fuzz/corpus/tokenizer_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "common/base/utf8.h"

namespace {

using sinkserve::Tokenizer;

struct Loaded {
  std::unique_ptr<Tokenizer> tokenizer;
  bool normalizes = false;  // NFC normalizer (the real tokenizer) or none (the demo)
};

Loaded Load() {
  std::vector<std::string> candidates;
  if (const char* path = std::getenv("SINKSERVE_TOKENIZER_JSON")) candidates.emplace_back(path);
  // The shared data directory from the build (not __FILE__: ccache may make that relative).
  candidates.push_back(std::string(SINKSERVE_SHARED_DATA) + "/tokenizer/tokenizer.json");
  for (const std::string& path : candidates) {
    if (!std::filesystem::exists(path)) continue;
    auto tokenizer = Tokenizer::FromFile(path);
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "tokenizer_fuzz: %s\n", tokenizer.status().ToString().c_str());
      std::abort();
    }
    std::fprintf(stderr, "tokenizer_fuzz: using %s\n", path.c_str());
    return {*std::move(tokenizer), true};
  }
  std::fprintf(stderr, "tokenizer_fuzz: no tokenizer.json found, using ByteLevelDemo\n");
  return {Tokenizer::ByteLevelDemo(), false};
}

const Loaded& Get() {
  static const Loaded* loaded = new Loaded(Load());
  return *loaded;
}

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "tokenizer_fuzz: violated: %s\n", what);
    std::abort();
  }
}

void CheckEncode(const Tokenizer& tokenizer, bool normalizes, std::string_view text) {
  const bool valid = sinkserve::utf8::Validate(text).ok();
  auto ids = tokenizer.Encode(text);
  if (!valid) {
    Check(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument &&
              ids.status().message().find("invalid UTF-8") != absl::string_view::npos,
          "invalid UTF-8 is refused with InvalidArgument");
    return;
  }
  Check(ids.ok(), "valid UTF-8 encodes");
  for (const int32_t id : *ids) Check(tokenizer.IsValidId(id), "ids are valid");
  const std::string decoded = tokenizer.Decode(*ids);
  const std::string nfc = sinkserve::unicode::Nfc(text);
  Check(sinkserve::unicode::Nfc(nfc) == nfc, "NFC is idempotent");
  Check(decoded == (normalizes ? nfc : std::string(text)), "Decode(Encode(x)) == NFC(x)");
  auto again = tokenizer.Encode(decoded);
  Check(again.ok() && *again == *ids, "Encode(Decode(Encode(x))) == Encode(x)");
}

void CheckDetokenizer(const Tokenizer& tokenizer, const uint8_t* data, size_t size) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) {
    ids.push_back(static_cast<int32_t>((data[i] | (data[i + 1] << 8)) % tokenizer.vocab_size()));
  }
  sinkserve::IncrementalDetokenizer detokenizer(tokenizer);
  std::string streamed;
  for (const int32_t id : ids) {
    const std::string piece = detokenizer.Push(id);
    Check(sinkserve::utf8::Validate(piece).ok(), "Push emits valid UTF-8");
    streamed += piece;
  }
  const std::string rest = detokenizer.Finish();
  Check(sinkserve::utf8::Validate(rest).ok(), "Finish emits valid UTF-8");
  streamed += rest;
  Check(streamed == tokenizer.DecodeLossy(ids), "streamed text == DecodeLossy");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Loaded& loaded = Get();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckEncode(*loaded.tokenizer, loaded.normalizes, text);
  CheckDetokenizer(*loaded.tokenizer, data, size);
  if (size > 0 && data[0] == '{') {
    auto tokenizer = Tokenizer::FromJson(text, "fuzz");
    Check(tokenizer.ok() || tokenizer.status().message().find("fuzz") != absl::string_view::npos,
          "FromJson errors name the source");
  }
  return 0;
}
