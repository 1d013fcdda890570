#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

std::vector<float> FreshLogits(uint64_t seed, int vocab) {
  std::mt19937_64 rng(seed);
  return testing::RandomFloats(rng, vocab, 2.0f);
}

TEST(SamplerTest, GreedyIsArgmax) {
  const uint64_t seed = testing::TestSeed();
  std::vector<float> logits = FreshLogits(seed, 1000);
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  SamplingParams params;
  params.temperature = 0.0f;
  Sampler sampler(params);
  EXPECT_EQ(sampler.Sample(logits, {}), argmax);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = FreshLogits(testing::TestSeed(), 500);
  auto draw = [&](uint64_t seed) {
    SamplingParams params;
    params.temperature = 1.5f;
    params.seed = seed;
    Sampler sampler(params);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 50; ++i) {
      std::vector<float> copy = logits;
      tokens.push_back(sampler.Sample(copy, {}));
    }
    return tokens;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> logits = FreshLogits(testing::TestSeed(), 300);
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (int trial = 0; trial < 20; ++trial) {
    SamplingParams top_k;
    top_k.top_k = 1;
    top_k.seed = trial;
    std::vector<float> copy = logits;
    EXPECT_EQ(Sampler(top_k).Sample(copy, {}), argmax);
    SamplingParams top_p;
    top_p.top_p = 1e-6f;
    top_p.seed = trial;
    copy = logits;
    EXPECT_EQ(Sampler(top_p).Sample(copy, {}), argmax);
  }
}

// Sampling frequencies follow softmax(logits / T) restricted to the top-k (a chi-square test
// with a generous threshold: it fails only when the distribution is wrong).
TEST(SamplerTest, FrequenciesFollowTheDistribution) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 3.0f};
  SamplingParams params;
  params.temperature = 0.7f;
  params.top_k = 4;
  params.seed = testing::TestSeed();
  Sampler sampler(params);
  const int draws = 200000;
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> copy = logits;
    ++counts[sampler.Sample(copy, {})];
  }
  // Top 4 by logit: tokens 5, 1, 4, 0.
  std::vector<int32_t> kept = {5, 1, 4, 0};
  double total = 0;
  for (int32_t t : kept) total += std::exp(logits[t] / 0.7);
  double chi_square = 0;
  for (int32_t t : kept) {
    const double expected = draws * std::exp(logits[t] / 0.7) / total;
    chi_square += (counts[t] - expected) * (counts[t] - expected) / expected;
  }
  EXPECT_LT(chi_square, 30.0);  // 3 degrees of freedom: p < 1e-5 by chance
  EXPECT_EQ(counts.count(2) + counts.count(3), 0u);
}

TEST(SamplerTest, TopPKeepsTheNucleus) {
  // Probabilities ≈ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps the first two.
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
  SamplingParams params;
  params.top_p = 0.8f;
  params.seed = testing::TestSeed();
  Sampler sampler(params);
  for (int i = 0; i < 5000; ++i) {
    std::vector<float> copy = logits;
    const int32_t token = sampler.Sample(copy, {});
    ASSERT_TRUE(token == 0 || token == 1) << token;
  }
}

TEST(SamplerTest, RepetitionPenaltyFollowsHuggingFace) {
  std::vector<float> logits = {2.0f, -2.0f, 1.5f, 0.5f};
  SamplingParams params;
  params.temperature = 0.0f;
  params.repetition_penalty = 2.0f;
  Sampler sampler(params);
  const int32_t history[] = {0, 1, 0, 0};  // duplicates count once
  EXPECT_EQ(sampler.Sample(logits, history), 2);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);   // positive: divided
  EXPECT_FLOAT_EQ(logits[1], -4.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(logits[2], 1.5f);   // unseen: unchanged
}

TEST(SamplerTest, ValidateNamesTheField) {
  SamplingParams params;
  params.temperature = -1;
  EXPECT_NE(params.Validate().message().find("temperature"), std::string::npos);
  params = {};
  params.top_p = 0;
  EXPECT_NE(params.Validate().message().find("top_p"), std::string::npos);
  params = {};
  params.top_k = -2;
  EXPECT_NE(params.Validate().message().find("top_k"), std::string::npos);
  params = {};
  params.repetition_penalty = 0;
  EXPECT_NE(params.Validate().message().find("repetition_penalty"), std::string::npos);
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
}

}  // namespace
}  // namespace sinkserve
