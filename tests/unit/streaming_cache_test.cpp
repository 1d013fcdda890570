// The streaming KV cache (sinks + window with position shift) against the independent
// StreamingLLM reference (tests/fixtures/make_streaming_fixtures.py): per-token NLL, logits at
// every step, and which tokens stay cached — token by token and in exact chunks.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <cstring>
#include <random>
#include <regex>

#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/format/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/unit/fixture_model.h"

namespace sinkserve {
namespace {

using testing::ReadTensor;

struct Config {
  int sink, window;
};

class StreamingCacheTest : public testing::FixtureModelTest {
 protected:
  void SetUp() override {
    LoadFixture("streaming.safetensors");
    if (HasFatalFailure()) return;
    const std::vector<int64_t> tokens = ReadTensor<int64_t>(*reference_->Find("tokens"));
    tokens_.assign(tokens.begin(), tokens.end());
    const std::regex name(R"(stream\.S(\d+)_W(\d+)\.nll)");
    for (const TensorInfo& info : reference_->tensors()) {
      std::smatch match;
      if (std::regex_match(info.name, match, name)) {
        configs_.push_back({std::stoi(match[1]), std::stoi(match[2])});
      }
    }
    ASSERT_FALSE(configs_.empty());
  }

  std::string Prefix(const Config& c) const {
    return "stream.S" + std::to_string(c.sink) + "_W" + std::to_string(c.window);
  }

  // Feeds the tokens in steps no larger than `max_chunk` (and what the cache allows), and
  // returns the logits at every position.
  std::vector<float> Feed(StreamingKvCache& cache, int max_chunk, std::mt19937_64* rng) {
    const int vocab = model_->config().vocab_size;
    std::vector<float> logits(tokens_.size() * vocab);
    for (size_t begin = 0; begin < tokens_.size();) {
      int chunk = std::min<int>(max_chunk, cache.MaxStepTokens());
      if (rng != nullptr) chunk = 1 + static_cast<int>((*rng)() % chunk);
      chunk = std::min<int>(chunk, static_cast<int>(tokens_.size() - begin));
      const absl::Status status = model_->backend().Forward(
          std::span(tokens_).subspan(begin, chunk), cache,
          std::span(logits).subspan(begin * vocab), /*all_logits=*/true);
      EXPECT_TRUE(status.ok()) << status;
      if (!status.ok()) break;
      begin += chunk;
    }
    return logits;
  }

  void ExpectMatchesReference(const Config& c, const std::vector<float>& logits,
                              const StreamingKvCache& cache, const std::string& how) {
    SCOPED_TRACE(Prefix(c) + " " + how);
    const int vocab = model_->config().vocab_size;
    const std::vector<float> nll = ReadTensor<float>(*reference_->Find(Prefix(c) + ".nll"));
    ASSERT_EQ(nll.size() + 1, tokens_.size());
    double worst = 0;
    for (size_t t = 0; t + 1 < tokens_.size(); ++t) {
      const double ours = TokenNll(std::span(logits).subspan(t * vocab, vocab), tokens_[t + 1]);
      worst = std::max(worst, std::abs(ours - nll[t]));
    }
    EXPECT_LE(worst, 1e-4) << "max |ΔNLL|";
    if (const TensorInfo* expected = reference_->Find(Prefix(c) + ".logits")) {
      const std::vector<float> reference = ReadTensor<float>(*expected);
      float max_reference = 0, max_error = 0;
      for (size_t i = 0; i < reference.size(); ++i) {
        max_reference = std::max(max_reference, std::abs(reference[i]));
        max_error = std::max(max_error, std::abs(reference[i] - logits[i]));
      }
      EXPECT_LE(max_error, 1e-4 * max_reference);
    }
    const std::vector<int64_t> cached = ReadTensor<int64_t>(*reference_->Find(Prefix(c) + ".cached"));
    EXPECT_EQ(cache.CachedStreamPositions(), cached);
    EXPECT_LE(cache.tokens_cached(), c.sink + c.window);
    EXPECT_EQ(cache.tokens_evicted() + cache.tokens_cached(), static_cast<int64_t>(tokens_.size()));
  }

  KvShape Shape() const {
    const ModelConfig& config = model_->config();
    return KvShape{config.num_layers, config.num_heads, config.head_dim};
  }

  std::vector<int32_t> tokens_;
  std::vector<Config> configs_;
};

TEST_P(StreamingCacheTest, TokenByTokenMatchesReference) {
  for (const Config& c : configs_) {
    StreamingKvCache cache(Shape(), c.sink, c.window);
    const std::vector<float> logits = Feed(cache, 1, nullptr);
    ExpectMatchesReference(c, logits, cache, "token by token");
  }
}

TEST_P(StreamingCacheTest, ExactChunksMatchReference) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  for (const Config& c : configs_) {
    StreamingKvCache greedy_chunks(Shape(), c.sink, c.window);
    ExpectMatchesReference(c, Feed(greedy_chunks, 1 << 20, nullptr), greedy_chunks,
                           "largest exact chunks");
    StreamingKvCache random_chunks(Shape(), c.sink, c.window);
    ExpectMatchesReference(c, Feed(random_chunks, 1 << 20, &rng), random_chunks,
                           "random exact chunks");
  }
}

TEST_P(StreamingCacheTest, ResetStartsAFreshStream) {
  const Config c = configs_.front();
  StreamingKvCache cache(Shape(), c.sink, c.window);
  Feed(cache, 1, nullptr);
  cache.Reset();
  EXPECT_EQ(cache.tokens_cached(), 0);
  ExpectMatchesReference(c, Feed(cache, 1, nullptr), cache, "after reset");
}

// 512-token streams for S=4 W=16, S=1 W=8, S=0 W=16 and S=4 W=64: per-token NLL within 1e-4
// of the reference at every step, and the same tokens cached at the end.
TEST_P(StreamingCacheTest, LongStreamsMatchReference) {
  const TensorInfo* long_tokens = reference_->Find("long.tokens");
  ASSERT_NE(long_tokens, nullptr);
  const std::vector<int64_t> ids = ReadTensor<int64_t>(*long_tokens);
  const std::vector<int32_t> tokens(ids.begin(), ids.end());
  ASSERT_GE(tokens.size(), 400u);
  const std::regex name(R"(long\.S(\d+)_W(\d+)\.nll)");
  int configs = 0;
  for (const TensorInfo& info : reference_->tensors()) {
    std::smatch match;
    if (!std::regex_match(info.name, match, name)) continue;
    ++configs;
    const int sink = std::stoi(match[1]), window = std::stoi(match[2]);
    SCOPED_TRACE(info.name);
    StreamingKvCache cache(Shape(), sink, window);
    const std::vector<float> expected = ReadTensor<float>(info);
    ASSERT_EQ(expected.size() + 1, tokens.size());
    std::vector<float> logits(model_->config().vocab_size);
    double worst = 0;
    for (size_t t = 0; t + 1 < tokens.size(); ++t) {
      ASSERT_TRUE(model_->backend().Forward(std::span(tokens).subspan(t, 1), cache, logits, false)
                      .ok());
      worst = std::max(worst, std::abs(TokenNll(logits, tokens[t + 1]) - expected[t]));
    }
    EXPECT_LE(worst, 1e-4) << "max |ΔNLL|";
    const std::string cached_name =
        "long.S" + std::to_string(sink) + "_W" + std::to_string(window) + ".cached";
    ASSERT_NE(reference_->Find(cached_name), nullptr);
    // The reference's cache state is after every token, the last one included.
    ASSERT_TRUE(
        model_->backend().Forward(std::span(tokens).last(1), cache, logits, false).ok());
    EXPECT_EQ(cache.CachedStreamPositions(), ReadTensor<int64_t>(*reference_->Find(cached_name)));
  }
  EXPECT_GE(configs, 4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StreamingCacheTest, ::testing::ValuesIn(testing::FixtureModelNames()),
                         [](const auto& info) { return info.param; });

long ResidentKilobytes() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// A session streams 20,000 tokens in constant memory: from token S+W on, the cache holds
// exactly S+W tokens, its bytes never change, and the process does not grow.
TEST(StreamingKvCacheTest, MemoryIsConstantOverA20000TokenStream) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::Load(ModelOptions{testing::FixturePath("models/pythia_f32_d64"), 1});
  ASSERT_TRUE(model.ok()) << model.status();
  CachePolicy policy;
  policy.sink_tokens = 4;
  policy.window_tokens = 64;
  std::unique_ptr<KvCache> cache = *(*model)->backend().NewCache(policy);
  const uint64_t bytes = cache->bytes();
  std::vector<float> logits((*model)->config().vocab_size);
  std::mt19937_64 rng(testing::TestSeed());
  [[maybe_unused]] long resident_after_warmup = 0;  // unused in sanitizer builds
  for (int t = 0; t < 20000; ++t) {
    const int32_t token[1] = {static_cast<int32_t>(rng() % logits.size())};
    ASSERT_TRUE((*model)->backend().Forward(token, *cache, logits, false).ok()) << t;
    ASSERT_EQ(cache->bytes(), bytes);
    if (t + 1 >= 68) {
      ASSERT_EQ(cache->tokens_cached(), 68) << t;
    }
    if (t == 1000) resident_after_warmup = ResidentKilobytes();
  }
  EXPECT_EQ(cache->tokens_evicted(), 20000 - 68);
#ifndef SINKSERVE_SANITIZED  // ASan's quarantine grows the process by design
  EXPECT_LE(ResidentKilobytes() - resident_after_warmup, 256) << "process grew while streaming";
#endif
}

TEST(StreamingKvCacheTest, RefusesStepsThatDoNotFitTheRing) {
  StreamingKvCache cache(KvShape{1, 1, 8}, 2, 3);
  const int ring = 3 + kStreamingStepTokens;  // W + the spare slots
  EXPECT_EQ(cache.MaxStepTokens(), 2 + ring);
  EXPECT_EQ(cache.BeginStep(2 + ring + 1).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(cache.BeginStep(2 + ring).ok());
  cache.EndStep();
  EXPECT_EQ(cache.tokens_cached(), 5);
  // Once the window is full every step may hold the spare slots' worth of tokens.
  EXPECT_EQ(cache.MaxStepTokens(), kStreamingStepTokens);
  const int64_t last = 2 + ring - 1;
  EXPECT_EQ(cache.CachedStreamPositions(), (std::vector<int64_t>{0, 1, last - 2, last - 1, last}));
  EXPECT_EQ(cache.bytes(), 2u * 1 * (2 + ring) * 8 * sizeof(float));  // fixed at creation
}

}  // namespace
}  // namespace sinkserve
