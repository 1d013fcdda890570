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
// The tokenizer comes from $SINKSERVE_TOKENIZER_JSON, else the evaluation data
// ($SINKSERVE_DATA_DIR or the repo's data/: scripts/fetch-data.sh); without either it stops.
//
//   ./tokenizer_fuzz -max_total_time=60 corpus-work tests/fuzz/corpus/tokenizer_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/data_dir.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "common/base/utf8.h"

namespace {

using sinkserve::Tokenizer;

// The tokenizer: $SINKSERVE_TOKENIZER_JSON, else the evaluation data's (client/data_dir.h).
const Tokenizer& Get() {
  static const Tokenizer* loaded = [] {
    const char* override_path = std::getenv("SINKSERVE_TOKENIZER_JSON");
    absl::StatusOr<std::string> path = override_path != nullptr
                                           ? absl::StatusOr<std::string>(override_path)
                                           : sinkserve::DataFile("tokenizer/tokenizer.json");
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        path.ok() ? Tokenizer::FromFile(*path) : path.status();
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "tokenizer_fuzz: %s\n", tokenizer.status().ToString().c_str());
      std::abort();
    }
    std::fprintf(stderr, "tokenizer_fuzz: using %s\n", path->c_str());
    return tokenizer->release();
  }();
  return *loaded;
}

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "tokenizer_fuzz: violated: %s\n", what);
    std::abort();
  }
}

void CheckEncode(const Tokenizer& tokenizer, std::string_view text) {
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
  Check(decoded == nfc, "Decode(Encode(x)) == NFC(x)");
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
  const Tokenizer& tokenizer = Get();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckEncode(tokenizer, text);
  CheckDetokenizer(tokenizer, data, size);
  if (size > 0 && data[0] == '{') {
    auto tokenizer = Tokenizer::FromJson(text, "fuzz");
    Check(tokenizer.ok() || tokenizer.status().message().find("fuzz") != absl::string_view::npos,
          "FromJson errors name the source");
  }
  return 0;
}
