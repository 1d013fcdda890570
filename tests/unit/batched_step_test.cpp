// A batched decode step over N sessions equals N separate steps, bit for bit, with the weights
// as stored and quantized (int8, NF4 + double-quant absmax), on every CPU kernel set, with fp32
// and with int8 activations; its greedy form picks each row's argmax.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <tuple>

#include "engine/cpu/int8_activations.h"
#include "engine/model.h"
#include "tests/unit/cpu_isa_params.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

using Params = std::tuple<std::string, WeightFormat, cpu::CpuIsa>;

class BatchedStepTest : public ::testing::TestWithParam<Params> {
 protected:
  void SetUp() override { SKIP_UNLESS_CPU_SUPPORTS(std::get<2>(GetParam())); }
};

// The fixture of `params` loaded with its format and kernel set, and --cpu-activations
// `activations`: 40 batched steps over 5 sessions against the same steps one at a time.
void CheckBatchedEqualsSeparate(const Params& params, const std::string& activations) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  ModelOptions options{testing::FixturePath("models/" + std::get<0>(params)), 2};
  options.quant = std::get<1>(params);
  options.double_quant = options.quant == WeightFormat::kNf4;
  options.cpu_isa = testing::CpuIsaFlag(std::get<2>(params));
  options.cpu_activations = activations;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(options);
  ASSERT_TRUE(model.ok()) << model.status();
  Backend& backend = (*model)->backend();
  // The kernels named: with int8 activations those of int8_activations.h (AVX-512 without
  // VNNI runs its AVX2 ones).
  const cpu::CpuIsa isa = std::get<2>(params);
  const char* kernels =
      activations == "int8" ? cpu::Int8ActivationsIsaName(isa) : cpu::CpuIsaName(isa);
  ASSERT_NE(backend.name().find(kernels), std::string::npos) << backend.name();
  ASSERT_EQ(backend.name().find("int8 activations") != std::string::npos, activations == "int8")
      << backend.name();
  const int vocab = (*model)->config().vocab_size;

  // Sessions with different policies and histories (some already evicting).
  std::vector<CachePolicy> policies(5);
  policies[0].kind = CachePolicy::Kind::kCachePolicyDense;
  policies[0].dense_capacity_tokens = 200;
  policies[1].sink_tokens = 4, policies[1].window_tokens = 16;
  policies[2].sink_tokens = 0, policies[2].window_tokens = 8;
  policies[3].sink_tokens = 2, policies[3].window_tokens = 3;
  policies[4].sink_tokens = 4, policies[4].window_tokens = 256;
  std::vector<std::unique_ptr<KvCache>> batched, separate;
  std::vector<int32_t> next(policies.size());
  std::vector<float> logits(vocab);
  for (size_t i = 0; i < policies.size(); ++i) {
    std::vector<int32_t> prompt(1 + rng() % 40);
    for (int32_t& token : prompt) token = static_cast<int32_t>(rng() % vocab);
    for (auto* caches : {&batched, &separate}) {
      caches->push_back(*backend.NewCache(policies[i]));
      ASSERT_TRUE(FeedTokens(backend, prompt, *caches->back(), logits).ok());
    }
    next[i] = static_cast<int32_t>(rng() % vocab);
  }

  std::vector<KvCache*> rows;
  for (auto& cache : batched) rows.push_back(cache.get());
  std::vector<float> batch_logits(rows.size() * vocab), single_logits(vocab);
  std::vector<int32_t> greedy(rows.size());
  for (int step = 0; step < 40; ++step) {
    // Odd steps through ForwardBatchGreedy: the same logits, and each row's argmax.
    const bool use_greedy = step % 2 == 1;
    ASSERT_TRUE((use_greedy ? backend.ForwardBatchGreedy(next, rows, batch_logits, greedy)
                            : backend.ForwardBatch(next, rows, batch_logits))
                    .ok());
    for (size_t i = 0; i < rows.size(); ++i) {
      const int32_t token[1] = {next[i]};
      ASSERT_TRUE(backend.Forward(token, *separate[i], single_logits, false).ok());
      ASSERT_EQ(std::memcmp(&batch_logits[i * vocab], single_logits.data(), vocab * sizeof(float)),
                0)
          << "session " << i << " step " << step;
      ASSERT_EQ(batched[i]->tokens_cached(), separate[i]->tokens_cached());
      next[i] = static_cast<int32_t>(std::max_element(single_logits.begin(), single_logits.end()) -
                                     single_logits.begin());
      if (use_greedy) {
        ASSERT_EQ(greedy[i], next[i]) << "session " << i << " step " << step;
      }
    }
  }
}

TEST_P(BatchedStepTest, EqualsSeparateStepsBitForBit) {
  ASSERT_NO_FATAL_FAILURE(CheckBatchedEqualsSeparate(GetParam(), "fp32"));
}

// --cpu-activations int8 keeps the property: activations are quantized per token.
class BatchedStepInt8ActivationsTest : public BatchedStepTest {};

TEST_P(BatchedStepInt8ActivationsTest, EqualsSeparateStepsBitForBit) {
  ASSERT_NO_FATAL_FAILURE(CheckBatchedEqualsSeparate(GetParam(), "int8"));
}

TEST(BatchedStepErrorsTest, BadRowChangesNothing) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::Load(ModelOptions{testing::FixturePath("models/pythia_f32_d64"), 1});
  ASSERT_TRUE(model.ok()) << model.status();
  Backend& backend = (*model)->backend();
  std::unique_ptr<KvCache> a = *backend.NewCache(CachePolicy{});
  std::unique_ptr<KvCache> b = *backend.NewCache(CachePolicy{});
  std::vector<float> logits(2 * (*model)->config().vocab_size);
  const int32_t bad[] = {1, (*model)->config().vocab_size};
  KvCache* caches[] = {a.get(), b.get()};
  EXPECT_EQ(backend.ForwardBatch(bad, caches, logits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->tokens_seen(), 0);
  const int32_t good[] = {1, 2};
  KvCache* shared[] = {a.get(), a.get()};
  EXPECT_EQ(backend.ForwardBatch(good, shared, logits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend.ForwardBatch(good, caches, logits).ok());
  EXPECT_EQ(a->tokens_seen(), 1);
}

std::string ParamName(const ::testing::TestParamInfo<Params>& info) {
  return std::get<0>(info.param) + "_" +
         (std::get<1>(info.param) == WeightFormat::kAsStored
              ? std::string("as_stored")
              : std::string(WeightFormatName(std::get<1>(info.param)))) +
         "_" + testing::CpuIsaFlag(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, BatchedStepTest,
    ::testing::Combine(::testing::ValuesIn(testing::FixtureModelNames()),
                       ::testing::Values(WeightFormat::kAsStored, WeightFormat::kInt8,
                                         WeightFormat::kNf4),
                       // The SIMD sets: the portable kernel computes each (row, token) alone by
                       // construction (its batches are checked in cpu_kernels_test, quant_test).
                       ::testing::Values(cpu::CpuIsa::kAvx512, cpu::CpuIsa::kAvx2)),
    ParamName);
INSTANTIATE_TEST_SUITE_P(
    Fixtures, BatchedStepInt8ActivationsTest,
    ::testing::Combine(::testing::ValuesIn(testing::FixtureModelNames()),
                       ::testing::Values(WeightFormat::kInt8, WeightFormat::kNf4),
                       ::testing::Values(cpu::CpuIsa::kAvx512, cpu::CpuIsa::kAvx2)),
    ParamName);

}  // namespace
}  // namespace sinkserve
