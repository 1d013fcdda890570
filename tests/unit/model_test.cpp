// The engine against Hugging Face transformers: logits at every position and 64-token greedy
// continuations on the fixture checkpoints (tests/fixtures/make_model_fixtures.py).
//
// Tolerance: max |Δlogit| ≤ 1e-4 · max |logit| for every storage dtype. F16/BF16 weights are
// upcast exactly to fp32 in both engines (the reference ran HF in fp32 on the stored values),
// so all storage dtypes differ from HF only by fp32 summation order — the same bound holds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <random>

#include "engine/model.h"
#include "engine/format/safetensors.h"
#include "engine/sampler.h"
#include "nlohmann/json.hpp"
#include "tests/unit/fixture_model.h"

namespace sinkserve {
namespace {

constexpr double kRelativeTolerance = 1e-4;

template <typename T>
std::vector<T> Read(const SafetensorsFile& file, const std::string& name) {
  const TensorInfo* info = file.Find(name);
  EXPECT_NE(info, nullptr) << name;
  return info == nullptr ? std::vector<T>{} : testing::ReadTensor<T>(*info);
}

std::vector<int32_t> ReadIds(const SafetensorsFile& file, const std::string& name) {
  std::vector<int64_t> ids = Read<int64_t>(file, name);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

class ModelTest : public testing::FixtureModelTest {
 protected:
  void SetUp() override { LoadFixture("reference.safetensors"); }

  int NumSequences() const {
    int n = 0;
    while (reference_->Find("tokens." + std::to_string(n)) != nullptr) ++n;
    return n;
  }

  // Feeds `tokens` in chunks of the given sizes, collecting the logits at every position.
  std::vector<float> LogitsInChunks(const std::vector<int32_t>& tokens,
                                    const std::vector<int>& chunks) {
    const int vocab = model_->config().vocab_size;
    std::unique_ptr<KvCache> cache =
        *model_->backend().NewDenseCache(static_cast<int>(tokens.size()));
    std::vector<float> logits(tokens.size() * vocab);
    size_t begin = 0;
    for (int chunk : chunks) {
      const std::span<const int32_t> part = std::span(tokens).subspan(begin, chunk);
      const absl::Status status = model_->backend().Forward(
          part, *cache, std::span(logits).subspan(begin * vocab), /*all_logits=*/true);
      EXPECT_TRUE(status.ok()) << status;
      begin += chunk;
    }
    EXPECT_EQ(begin, tokens.size());
    return logits;
  }

  void ExpectClose(const std::vector<float>& actual, const std::vector<float>& expected,
                   const std::string& what) {
    ASSERT_EQ(actual.size(), expected.size()) << what;
    float max_reference = 0, max_error = 0;
    size_t worst = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      max_reference = std::max(max_reference, std::abs(expected[i]));
      const float error = std::abs(actual[i] - expected[i]);
      if (error > max_error) max_error = error, worst = i;
    }
    std::printf("  %-40s max |Δ| / max |logit| = %.2e\n", what.c_str(), max_error / max_reference);
    EXPECT_LE(max_error, kRelativeTolerance * max_reference)
        << what << ": worst at flat index " << worst << " (position "
        << worst / model_->config().vocab_size << "), max |logit| " << max_reference;
  }

};

TEST_P(ModelTest, LogitsMatchHuggingFaceWholeSequence) {
  for (int i = 0; i < NumSequences(); ++i) {
    const std::vector<int32_t> tokens = ReadIds(*reference_, "tokens." + std::to_string(i));
    const std::vector<float> expected = Read<float>(*reference_, "logits." + std::to_string(i));
    ExpectClose(LogitsInChunks(tokens, {static_cast<int>(tokens.size())}), expected,
                "sequence " + std::to_string(i) + " in one step");
  }
}

TEST_P(ModelTest, LogitsMatchHuggingFaceTokenByToken) {
  for (int i = 0; i < NumSequences(); ++i) {
    const std::vector<int32_t> tokens = ReadIds(*reference_, "tokens." + std::to_string(i));
    const std::vector<float> expected = Read<float>(*reference_, "logits." + std::to_string(i));
    ExpectClose(LogitsInChunks(tokens, std::vector<int>(tokens.size(), 1)), expected,
                "sequence " + std::to_string(i) + " token by token");
  }
}

TEST_P(ModelTest, LogitsMatchHuggingFaceInRandomChunks) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  for (int i = 0; i < NumSequences(); ++i) {
    const std::vector<int32_t> tokens = ReadIds(*reference_, "tokens." + std::to_string(i));
    std::vector<int> chunks;
    for (int left = static_cast<int>(tokens.size()); left > 0;) {
      const int chunk = std::min(left, static_cast<int>(rng() % 17) + 1);
      chunks.push_back(chunk);
      left -= chunk;
    }
    ExpectClose(LogitsInChunks(tokens, chunks),
                Read<float>(*reference_, "logits." + std::to_string(i)),
                "sequence " + std::to_string(i) + " in random chunks");
  }
}

TEST_P(ModelTest, GreedyContinuationIsIdentical) {
  for (int i = 0; reference_->Find("greedy.prompt." + std::to_string(i)) != nullptr; ++i) {
    std::vector<int32_t> tokens = ReadIds(*reference_, "greedy.prompt." + std::to_string(i));
    const std::vector<int32_t> expected = ReadIds(*reference_, "greedy.output." + std::to_string(i));
    std::unique_ptr<KvCache> cache =
        *model_->backend().NewDenseCache(static_cast<int>(tokens.size() + expected.size()));
    std::vector<float> logits(model_->config().vocab_size);
    ASSERT_TRUE(model_->backend().Forward(tokens, *cache, logits, false).ok());
    SamplingParams greedy;
    greedy.temperature = 0.0f;
    Sampler sampler(greedy);
    std::vector<int32_t> generated;
    for (size_t step = 0; step < expected.size(); ++step) {
      generated.push_back(sampler.Sample(logits, tokens));
      tokens.push_back(generated.back());
      const int32_t next[1] = {generated.back()};
      if (step + 1 < expected.size()) {
        ASSERT_TRUE(model_->backend().Forward(next, *cache, logits, false).ok());
      }
    }
    EXPECT_EQ(generated, expected) << "prompt " << i;
  }
}

TEST_P(ModelTest, DenseCacheRefusesToOverflow) {
  std::unique_ptr<KvCache> cache = *model_->backend().NewDenseCache(4);
  std::vector<float> logits(model_->config().vocab_size);
  const std::vector<int32_t> tokens = {1, 2, 3};
  ASSERT_TRUE(model_->backend().Forward(tokens, *cache, logits, false).ok());
  const absl::Status status = model_->backend().Forward(tokens, *cache, logits, false);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  EXPECT_EQ(cache->tokens_cached(), 3);  // nothing changed
  const int32_t bad[1] = {model_->config().vocab_size};
  EXPECT_EQ(model_->backend().Forward(bad, *cache, logits, false).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->tokens_cached(), 3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelTest, ::testing::ValuesIn(testing::FixtureModelNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace sinkserve
