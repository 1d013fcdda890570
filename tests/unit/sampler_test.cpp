#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
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

// The kept tokens and their probabilities, by the definition (sort the whole vocabulary,
// HF's order: temperature, top-k, top-p): the reference for the sampler's selection shortcuts.
std::map<int32_t, double> KeptDistribution(const std::vector<float>& logits,
                                           const SamplingParams& params) {
  std::vector<std::pair<double, int32_t>> sorted;
  for (size_t t = 0; t < logits.size(); ++t) {
    sorted.emplace_back(double(logits[t]) / params.temperature, static_cast<int32_t>(t));
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  if (params.top_k > 0 && params.top_k < static_cast<int>(sorted.size())) {
    sorted.resize(params.top_k);
  }
  double total = 0;
  for (const auto& [s, t] : sorted) total += std::exp(s - sorted[0].first);
  std::map<int32_t, double> kept;
  double mass = 0, kept_mass = 0;
  for (const auto& [s, t] : sorted) {
    const double p = std::exp(s - sorted[0].first) / total;
    kept[t] = p;
    kept_mass += p;
    mass += p;
    if (mass >= params.top_p) break;
  }
  for (auto& [t, p] : kept) p /= kept_mass;
  return kept;
}

// Chi-square of `draws` samples against the reference distribution over a vocabulary large
// enough for the selection paths (a nucleus of ~100–500 tokens, past the first sorted prefix
// of 64); tokens outside the kept set must never appear.
void ExpectSamplesFollowTheDefinition(const SamplingParams& params, int draws) {
  std::mt19937_64 rng(params.seed);
  std::vector<float> logits = testing::RandomFloats(rng, 1500, 1.0f);
  for (float& l : logits) l *= 1.5f;
  const std::map<int32_t, double> want = KeptDistribution(logits, params);
  Sampler sampler(params);
  std::map<int32_t, int> counts;
  std::vector<float> copy(logits.size());
  for (int i = 0; i < draws; ++i) {
    std::copy(logits.begin(), logits.end(), copy.begin());
    const int32_t token = sampler.Sample(copy, {});
    ASSERT_TRUE(want.count(token)) << "token " << token << " is outside the kept set";
    ++counts[token];
  }
  // Categories with expected count ≥ 20 (the rest pooled into one).
  double chi_square = 0, pooled_expected = 0;
  int pooled = 0, categories = 0;
  for (const auto& [token, p] : want) {
    const double expected = draws * p;
    const int got = counts.count(token) ? counts[token] : 0;
    if (expected < 20) {
      pooled_expected += expected;
      pooled += got;
      continue;
    }
    chi_square += (got - expected) * (got - expected) / expected;
    ++categories;
  }
  if (pooled_expected > 0) {
    chi_square += (pooled - pooled_expected) * (pooled - pooled_expected) / pooled_expected;
    ++categories;
  }
  // Mean = degrees of freedom, sd = √(2·dof): 8 sd above fails only for a wrong distribution.
  EXPECT_LT(chi_square, categories + 8 * std::sqrt(2.0 * categories))
      << want.size() << " kept tokens, " << categories << " categories";
}

TEST(SamplerTest, TemperatureOnlySamplesTheWholeSoftmax) {
  SamplingParams params;
  params.temperature = 0.9f;
  params.seed = testing::TestSeed();
  ExpectSamplesFollowTheDefinition(params, 60000);
}

TEST(SamplerTest, TopPSamplesTheNucleusOfALargeVocabulary) {
  for (float top_p : {0.5f, 0.9f}) {
    SamplingParams params;
    params.temperature = 1.1f;
    params.top_p = top_p;
    params.seed = testing::TestSeed() + static_cast<uint64_t>(top_p * 10);
    ExpectSamplesFollowTheDefinition(params, 60000);
  }
}

TEST(SamplerTest, TopKThenTopPSamplesTheirIntersection) {
  SamplingParams params;
  params.temperature = 0.8f;
  params.top_k = 300;
  params.top_p = 0.7f;
  params.seed = testing::TestSeed();
  ExpectSamplesFollowTheDefinition(params, 60000);
}

// Logits that are not a distribution never crash the sampler or yield a NaN token: NaN counts
// as −inf; a +inf logit (or a temperature so small that a logit overflows) is the greedy
// choice; all −inf gives a valid id. For every path: temperature alone, top-p, top-k.
TEST(SamplerTest, NonFiniteLogitsGiveValidTokens) {
  const float kInf = std::numeric_limits<float>::infinity();
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  for (const auto& [top_k, top_p] : {std::pair{0, 1.0f}, {0, 0.9f}, {5, 1.0f}, {5, 0.5f}}) {
    SCOPED_TRACE(::testing::Message() << "top_k " << top_k << " top_p " << top_p);
    SamplingParams params;
    params.temperature = 0.7f;
    params.top_k = top_k;
    params.top_p = top_p;
    params.seed = testing::TestSeed();
    Sampler sampler(params);
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<float> logits = FreshLogits(params.seed + trial, 100);
      logits[3] = logits[50] = kNaN;
      const int32_t token = sampler.Sample(logits, {});
      ASSERT_TRUE(token >= 0 && token < 100 && token != 3 && token != 50) << token;
    }
    std::vector<float> with_inf = FreshLogits(params.seed, 100);
    with_inf[42] = kInf;
    with_inf[7] = kNaN;
    EXPECT_EQ(sampler.Sample(with_inf, {}), 42);
    std::vector<float> all_minus_inf(100, -kInf);
    const int32_t any = sampler.Sample(all_minus_inf, {});
    EXPECT_TRUE(any >= 0 && any < 100) << any;
    SamplingParams tiny = params;
    tiny.temperature = 1e-38f;  // valid, but logit / temperature overflows
    std::vector<float> logits = FreshLogits(params.seed + 1, 100);
    const int32_t argmax =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(Sampler(tiny).Sample(logits, {}), argmax);
  }
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
