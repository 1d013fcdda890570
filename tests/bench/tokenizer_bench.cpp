// Tokenizer throughput on WikiText-2 test (1.29 MB of English), one core. The target is
// >= 5 MB/s for Encode (docs/tokenizer.md); bytes/s below count input bytes for Encode and output
// bytes for decoding.
//
//   build-tok/tests/bench/tokenizer_bench --benchmark_filter=Encode
//
// "Cold" encodes with a fresh tokenizer each iteration (empty pre-token cache: the cost of a
// first request); "Warm" reuses one tokenizer (the steady state of a server).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/base/data_dir.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"

namespace sinkserve {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// The evaluation data file `relative` (client/data_dir.h); exits naming the fetch script if
// missing.
std::string DataPathOrExit(const std::string& relative) {
  absl::StatusOr<std::string> path = DataFile(relative);
  if (!path.ok()) {
    std::fprintf(stderr, "%s\n", std::string(path.status().message()).c_str());
    std::exit(1);
  }
  return *path;
}

const std::string& WikiText() {
  static const std::string* text =
      new std::string(ReadFile(DataPathOrExit("wikitext-2-raw/wiki.test.raw")));
  return *text;
}

std::unique_ptr<Tokenizer> LoadPythia() {
  auto tokenizer = Tokenizer::FromFile(DataPathOrExit("tokenizer/tokenizer.json"));
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    std::abort();
  }
  return *std::move(tokenizer);
}

const Tokenizer& Pythia() {
  static const Tokenizer* tokenizer = LoadPythia().release();
  return *tokenizer;
}

void BM_EncodeWikiWarm(benchmark::State& state) {
  const std::string& text = WikiText();
  const Tokenizer& tokenizer = Pythia();
  for (auto _ : state) {
    auto ids = tokenizer.Encode(text);
    benchmark::DoNotOptimize(ids);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeWikiWarm)->Unit(benchmark::kMillisecond);

void BM_EncodeWikiCold(benchmark::State& state) {
  const std::string& text = WikiText();
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<Tokenizer> tokenizer = LoadPythia();
    state.ResumeTiming();
    auto ids = tokenizer->Encode(text);
    benchmark::DoNotOptimize(ids);
    state.PauseTiming();
    tokenizer.reset();
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeWikiCold)->Unit(benchmark::kMillisecond)->Iterations(3);

// One Encode call per line: per-call overhead (validation, added-token scan, vectors).
void BM_EncodeWikiLines(benchmark::State& state) {
  const std::string& text = WikiText();
  std::vector<std::string_view> lines;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    lines.push_back(std::string_view(text).substr(begin, end - begin));
    begin = end + 1;
  }
  const Tokenizer& tokenizer = Pythia();
  for (auto _ : state) {
    for (std::string_view line : lines) {
      auto ids = tokenizer.Encode(line);
      benchmark::DoNotOptimize(ids);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeWikiLines)->Unit(benchmark::kMillisecond);

void BM_DecodeWiki(benchmark::State& state) {
  const Tokenizer& tokenizer = Pythia();
  const std::vector<int32_t> ids = *tokenizer.Encode(WikiText());
  for (auto _ : state) {
    std::string text = tokenizer.Decode(ids);
    benchmark::DoNotOptimize(text);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * WikiText().size()));
}
BENCHMARK(BM_DecodeWiki)->Unit(benchmark::kMillisecond);

void BM_IncrementalDetokenizeWiki(benchmark::State& state) {
  const Tokenizer& tokenizer = Pythia();
  const std::vector<int32_t> ids = *tokenizer.Encode(WikiText());
  for (auto _ : state) {
    IncrementalDetokenizer detokenizer(tokenizer);
    size_t bytes = 0;
    for (const int32_t id : ids) bytes += detokenizer.Push(id).size();
    bytes += detokenizer.Finish().size();
    benchmark::DoNotOptimize(bytes);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * WikiText().size()));
}
BENCHMARK(BM_IncrementalDetokenizeWiki)->Unit(benchmark::kMillisecond);

// NFC on text that needs it (NFD French-like text): the slow path of normalization.
void BM_NfcOfNfdText(benchmark::State& state) {
  std::string text;
  while (text.size() < 1 << 20) text += "Le cafe\u0301 de\u0301ja\u0300 re\u0301serve\u0301, ";
  for (auto _ : state) {
    std::string nfc = unicode::Nfc(text);
    benchmark::DoNotOptimize(nfc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_NfcOfNfdText)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sinkserve

BENCHMARK_MAIN();
