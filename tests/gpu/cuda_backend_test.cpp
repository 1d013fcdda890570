// The CUDA backend against the CPU engine (the reference, itself checked against HF): whole-model
// logits on every fixture checkpoint (prefill, token by token, dense and streaming caches,
// batched steps), the quantized kernels against the CPU on dequantized weights, and the memory
// accounting. Skipped, with the reason, where no CUDA device is usable.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/model.h"
#include "tests/gpu/quantized_copy.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

// ‖a − b‖ / ‖b‖ over all elements.
double RelativeError(std::span<const float> a, std::span<const float> b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / norm);
}

// fp16 weights and fp16 matrix-product inputs against fp32 everywhere on the CPU.
constexpr double kLogitTolerance = 1e-2;

std::vector<int32_t> RandomTokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

class CudaBackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (absl::Status status = CudaAvailable(); !status.ok()) GTEST_SKIP() << status.message();
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::Load(ModelOptions{testing::FixturePath("models/" + GetParam()), 2});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    absl::StatusOr<std::unique_ptr<Backend>> cuda =
        NewCudaBackend(model_->config(), model_->weights(), CudaOptions{});
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    cuda_ = std::move(*cuda);
    vocab_ = model_->config().vocab_size;
  }

  // Logits at every position, feeding `tokens` in steps of `step` tokens.
  std::vector<float> Logits(Backend& backend, KvCache& cache, std::span<const int32_t> tokens,
                            int step) {
    std::vector<float> logits(tokens.size() * vocab_);
    for (size_t begin = 0; begin < tokens.size();) {
      const int n = std::min<int>({step, cache.MaxStepTokens(),
                                   static_cast<int>(tokens.size() - begin)});
      const absl::Status status =
          backend.Forward(tokens.subspan(begin, n), cache,
                          std::span(logits).subspan(begin * vocab_), /*all_logits=*/true);
      EXPECT_TRUE(status.ok()) << status;
      begin += n;
    }
    return logits;
  }

  std::vector<float> Run(Backend& backend, const CachePolicy& policy,
                         std::span<const int32_t> tokens, int step) {
    absl::StatusOr<std::unique_ptr<KvCache>> cache = backend.NewCache(policy);
    EXPECT_TRUE(cache.ok()) << cache.status();
    return Logits(backend, **cache, tokens, step);
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Backend> cuda_;
  int vocab_ = 0;
};

CachePolicy Dense() {
  CachePolicy policy;
  policy.kind = CachePolicy::Kind::kCachePolicyDense;
  policy.dense_capacity_tokens = 512;
  return policy;
}

CachePolicy Streaming(int sink, int window) {
  CachePolicy policy;
  policy.sink_tokens = sink;
  policy.window_tokens = window;
  return policy;
}

TEST_P(CudaBackendTest, DenseLogitsMatchCpuInPrefillAndTokenByToken) {
  const std::vector<int32_t> tokens = RandomTokens(300, vocab_, 11);
  const std::vector<float> expected = Run(model_->backend(), Dense(), tokens, 1);
  for (int step : {1, 7, 256}) {
    const std::vector<float> got = Run(*cuda_, Dense(), tokens, step);
    EXPECT_LT(RelativeError(got, expected), kLogitTolerance) << "step " << step;
  }
}

TEST_P(CudaBackendTest, StreamingLogitsMatchCpuThroughEvictions) {
  const std::vector<int32_t> tokens = RandomTokens(400, vocab_, 12);
  for (const CachePolicy& policy : {Streaming(4, 16), Streaming(0, 8), Streaming(4, 256)}) {
    const std::vector<float> expected = Run(model_->backend(), policy, tokens, 1);
    for (int step : {1, 5, 300}) {
      const std::vector<float> got = Run(*cuda_, policy, tokens, step);
      EXPECT_LT(RelativeError(got, expected), kLogitTolerance)
          << policy.Describe() << " step " << step;
    }
  }
}

// A saved session (issue 18): the cache's bytes copied off the device and into a fresh cache,
// resumed at the same stream position, continue bit for bit like the cache that never left.
TEST_P(CudaBackendTest, CacheContentsRoundTripContinuesBitForBit) {
  const std::vector<int32_t> before = RandomTokens(90, vocab_, 21);
  const std::vector<int32_t> after = RandomTokens(40, vocab_, 22);
  for (const CachePolicy& policy : {Streaming(4, 16), Dense()}) {
    absl::StatusOr<std::unique_ptr<KvCache>> kept = cuda_->NewCache(policy);
    ASSERT_TRUE(kept.ok()) << kept.status();
    Logits(*cuda_, **kept, before, 7);
    EXPECT_EQ((*kept)->ContentsFormat(), "cuda fp16 [layers][2][heads][capacity][head_dim]");
    std::vector<std::byte> saved((*kept)->bytes());
    ASSERT_TRUE((*kept)->CopyContentsTo(saved).ok());

    absl::StatusOr<std::unique_ptr<KvCache>> restored = cuda_->NewCache(policy);
    ASSERT_TRUE(restored.ok()) << restored.status();
    ASSERT_TRUE((*restored)->CopyContentsFrom(saved).ok());
    ASSERT_TRUE((*restored)->ResumeAt((*kept)->tokens_seen()).ok());
    EXPECT_EQ((*restored)->tokens_cached(), (*kept)->tokens_cached());
    EXPECT_EQ((*restored)->tokens_evicted(), (*kept)->tokens_evicted());

    const std::vector<float> expected = Logits(*cuda_, **kept, after, 1);
    const std::vector<float> got = Logits(*cuda_, **restored, after, 1);
    EXPECT_EQ(0, std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)))
        << policy.Describe();
  }
}

TEST_P(CudaBackendTest, BatchedStepMatchesCpu) {
  // 20 sessions (past the fused kernels' 8 rows: the cuBLASLt path) with mixed policies and
  // prompt lengths, then 20 batched decode steps.
  constexpr int kSessions = 20;
  std::vector<std::unique_ptr<KvCache>> cpu_caches, gpu_caches;
  std::vector<float> logits(vocab_), gpu_logits(vocab_);
  for (int i = 0; i < kSessions; ++i) {
    const CachePolicy policy = i % 3 == 0 ? Dense() : Streaming(i % 2 * 4, 8 + i);
    cpu_caches.push_back(*model_->backend().NewCache(policy));
    gpu_caches.push_back(*cuda_->NewCache(policy));
    const std::vector<int32_t> prompt = RandomTokens(5 + 3 * i, vocab_, 100 + i);
    ASSERT_TRUE(FeedTokens(model_->backend(), prompt, *cpu_caches.back(), logits).ok());
    ASSERT_TRUE(FeedTokens(*cuda_, prompt, *gpu_caches.back(), gpu_logits).ok());
  }
  std::vector<KvCache*> cpu_rows, gpu_rows;
  for (int i = 0; i < kSessions; ++i) {
    cpu_rows.push_back(cpu_caches[i].get());
    gpu_rows.push_back(gpu_caches[i].get());
  }
  std::vector<float> expected(kSessions * vocab_), got(kSessions * vocab_);
  for (int step = 0; step < 20; ++step) {
    for (int rows : {kSessions, 3}) {  // the cuBLASLt path and the fused one
      const std::vector<int32_t> tokens = RandomTokens(rows, vocab_, 1000 + step * 7 + rows);
      std::span<KvCache* const> cpu_batch(cpu_rows.data(), rows), gpu_batch(gpu_rows.data(), rows);
      ASSERT_TRUE(model_->backend().ForwardBatch(tokens, cpu_batch, expected).ok());
      ASSERT_TRUE(cuda_->ForwardBatch(tokens, gpu_batch, got).ok());
      EXPECT_LT(RelativeError(std::span(got).first(rows * vocab_),
                              std::span(expected).first(rows * vocab_)),
                kLogitTolerance)
          << "step " << step << " rows " << rows;
    }
  }
}

// `n` streaming caches (sink 4 + window 16) of `backend`, and the rows of a batch over them.
struct Sessions {
  Sessions(const Backend& backend, int n) {
    for (int i = 0; i < n; ++i) {
      caches.push_back(*backend.NewCache(Streaming(4, 16)));
      rows.push_back(caches.back().get());
    }
  }
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<KvCache*> rows;
};

// Steps replayed from CUDA graphs run the same kernels as steps launched one by one: the
// logits are bit-identical, through prefill chunks, single tokens and batched steps whose
// shapes repeat (a graph is captured the second time a shape is seen).
TEST_P(CudaBackendTest, GraphStepsEqualEagerStepsBitForBit) {
  CudaOptions eager_options;
  eager_options.graphs = false;
  absl::StatusOr<std::unique_ptr<Backend>> eager =
      NewCudaBackend(model_->config(), model_->weights(), eager_options);
  ASSERT_TRUE(eager.ok()) << eager.status();
  const std::vector<int32_t> tokens = RandomTokens(200, vocab_, 14);
  for (int step : {1, 5, 16}) {  // 16: prefill chunks through cuBLASLt, captured too
    const std::vector<float> graphed = Run(*cuda_, Streaming(4, 32), tokens, step);
    const std::vector<float> expected = Run(**eager, Streaming(4, 32), tokens, step);
    ASSERT_EQ(graphed.size(), expected.size());
    EXPECT_EQ(std::memcmp(graphed.data(), expected.data(), graphed.size() * sizeof(float)), 0)
        << "step " << step;
  }
  constexpr int kSessions = 10;  // past the fused kernels' 8 rows: cuBLASLt in the graph
  Sessions graphed_sessions(*cuda_, kSessions), eager_sessions(**eager, kSessions);
  std::vector<float> graphed(kSessions * vocab_), expected(kSessions * vocab_);
  for (int step = 0; step < 40; ++step) {  // through the windows' evictions
    const std::vector<int32_t> batch = RandomTokens(kSessions, vocab_, 2000 + step);
    ASSERT_TRUE(cuda_->ForwardBatch(batch, graphed_sessions.rows, graphed).ok());
    ASSERT_TRUE((*eager)->ForwardBatch(batch, eager_sessions.rows, expected).ok());
    ASSERT_EQ(std::memcmp(graphed.data(), expected.data(), graphed.size() * sizeof(float)), 0)
        << "batched step " << step;
  }
  // Graphs really ran (a failed capture would have turned them off and compared eager steps).
  EXPECT_GT(CudaGraphLaunches(*cuda_), 100);
  EXPECT_EQ(CudaGraphLaunches(**eager), 0);
}

// Programmatic dependent launch of the matrix kernels (opt-in) changes when blocks start, never
// what they compute: the same logits, bit for bit, in prefill, single and batched steps, timed
// and untimed, eager and from graphs.
TEST_P(CudaBackendTest, ProgrammaticLaunchGivesTheSameLogitsBitForBit) {
  for (const bool graphs : {true, false}) {
    for (const int timing : {1, 0}) {
      SCOPED_TRACE(::testing::Message() << "graphs " << graphs << ", attention timing " << timing);
      CudaOptions options, programmatic_options;
      options.graphs = programmatic_options.graphs = graphs;
      options.attention_timing_every = programmatic_options.attention_timing_every = timing;
      programmatic_options.programmatic_launch = true;
      absl::StatusOr<std::unique_ptr<Backend>> plain =
          NewCudaBackend(model_->config(), model_->weights(), options);
      absl::StatusOr<std::unique_ptr<Backend>> programmatic =
          NewCudaBackend(model_->config(), model_->weights(), programmatic_options);
      ASSERT_TRUE(plain.ok()) << plain.status();
      ASSERT_TRUE(programmatic.ok()) << programmatic.status();
      const std::vector<int32_t> tokens = RandomTokens(120, vocab_, 17);
      for (int step : {1, 5}) {
        const std::vector<float> got = Run(**programmatic, Streaming(4, 32), tokens, step);
        const std::vector<float> expected = Run(**plain, Streaming(4, 32), tokens, step);
        EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0)
            << "step " << step;
      }
      constexpr int kSessions = 6;
      Sessions got_sessions(**programmatic, kSessions), expected_sessions(**plain, kSessions);
      std::vector<float> got(kSessions * vocab_), expected(kSessions * vocab_);
      for (int step = 0; step < 12; ++step) {
        const std::vector<int32_t> batch = RandomTokens(kSessions, vocab_, 3000 + step);
        ASSERT_TRUE((*programmatic)->ForwardBatch(batch, got_sessions.rows, got).ok());
        ASSERT_TRUE((*plain)->ForwardBatch(batch, expected_sessions.rows, expected).ok());
        ASSERT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0)
            << "batched step " << step;
      }
      // A programmatic launch that cannot be captured would have turned graphs off.
      if (graphs) {
        EXPECT_GT(CudaGraphLaunches(**programmatic), 0);
      }
    }
  }
}

// The input embeddings in mapped host memory (the default) give the same logits, bit for bit,
// as in device memory, and the device holds that much less (unless tied: then on the device).
TEST_P(CudaBackendTest, EmbeddingsInHostMemoryGiveTheSameLogitsAndSaveDeviceMemory) {
  CudaOptions on_device_options;
  on_device_options.embeddings_on_host = false;
  absl::StatusOr<std::unique_ptr<Backend>> on_device =
      NewCudaBackend(model_->config(), model_->weights(), on_device_options);
  ASSERT_TRUE(on_device.ok()) << on_device.status();
  const ModelWeights& weights = model_->weights();
  const bool tied = weights.embed_out.storage() == weights.embed_in.storage();
  const uint64_t table_bytes = tied ? 0 : uint64_t{2} * weights.embed_in.rows * weights.embed_in.cols;
  EXPECT_EQ((*on_device)->device_memory().used_bytes,
            cuda_->device_memory().used_bytes + table_bytes);
  const std::vector<int32_t> tokens = RandomTokens(150, vocab_, 16);
  const std::vector<float> got = Run(*cuda_, Streaming(4, 32), tokens, 7);
  const std::vector<float> expected = Run(**on_device, Streaming(4, 32), tokens, 7);
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0);
}

// The greedy step (argmax on the device) picks the same ids as the host's argmax of the same
// backend's logits; the caches advance alike.
TEST_P(CudaBackendTest, GreedyBatchedStepEqualsHostArgmaxOfLogits) {
  absl::StatusOr<std::unique_ptr<Backend>> other =
      NewCudaBackend(model_->config(), model_->weights(), CudaOptions{});
  ASSERT_TRUE(other.ok()) << other.status();
  constexpr int kSessions = 12;
  Sessions sessions(*cuda_, kSessions), other_sessions(**other, kSessions);
  std::vector<int32_t> tokens = RandomTokens(kSessions, vocab_, 15), next(kSessions);
  std::vector<float> logits(kSessions * vocab_), scratch(kSessions * vocab_);
  for (int step = 0; step < 30; ++step) {
    ASSERT_TRUE(cuda_->ForwardBatch(tokens, sessions.rows, logits).ok());
    ASSERT_TRUE((*other)->ForwardBatchGreedy(tokens, other_sessions.rows, scratch, next).ok());
    for (int i = 0; i < kSessions; ++i) {
      const float* row = &logits[static_cast<size_t>(i) * vocab_];
      ASSERT_EQ(next[i], std::max_element(row, row + vocab_) - row)
          << "step " << step << " row " << i;
    }
    tokens = next;
  }
}

TEST_P(CudaBackendTest, QuantizedKernelsMatchCpuOnDequantizedWeights) {
  const std::vector<int32_t> tokens = RandomTokens(120, vocab_, 13);
  struct Case {
    WeightFormat format;
    bool double_quant;
    const char* name;
  };
  for (const Case& c : {Case{WeightFormat::kInt8, false, "int8"}, Case{WeightFormat::kNf4, false, "nf4"},
                        Case{WeightFormat::kNf4, true, "nf4 double-quant"}}) {
    ModelOptions options{testing::FixturePath("models/" + GetParam()), 2};
    options.quant = c.format;
    options.double_quant = c.double_quant;
    absl::StatusOr<std::unique_ptr<Model>> quantized = Model::Load(options);
    ASSERT_TRUE(quantized.ok()) << quantized.status();
    std::unique_ptr<testing::DequantizedCopy> dequantized =
        testing::Dequantize((*quantized)->weights());
    absl::StatusOr<std::unique_ptr<Backend>> gpu =
        NewCudaBackend(model_->config(), (*quantized)->weights(), CudaOptions{});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    CpuBackend cpu(model_->config(), dequantized->weights, 2);
    for (int step : {1, 4, 12, 120}) {  // fused kernels (1..8 rows), dequantize + cuBLASLt
      const std::vector<float> expected = Run(cpu, Streaming(4, 32), tokens, step);
      const std::vector<float> got = Run(**gpu, Streaming(4, 32), tokens, step);
      EXPECT_LT(RelativeError(got, expected), kLogitTolerance) << c.name << " step " << step;
    }
  }
}

TEST_P(CudaBackendTest, MemoryAccountingCountsCachesAndPoolsThem) {
  const uint64_t before = cuda_->device_memory().used_bytes;
  EXPECT_GT(before, 0u);
  EXPECT_GE(cuda_->device_memory().total_bytes, before);
  uint64_t cache_bytes = 0;
  {
    absl::StatusOr<std::unique_ptr<KvCache>> cache = cuda_->NewCache(Streaming(4, 64));
    ASSERT_TRUE(cache.ok());
    cache_bytes = (*cache)->bytes();
    const KvShape& shape = (*cache)->shape();
    EXPECT_EQ(cache_bytes, uint64_t{2} * shape.num_layers * 2 * shape.num_heads *
                               (4 + 64 + kStreamingStepTokens) * shape.head_dim);
    EXPECT_EQ(cuda_->device_memory().used_bytes, before + cache_bytes);
  }
  // Released to the pool, reused by the next cache of the same size.
  EXPECT_EQ(cuda_->device_memory().used_bytes, before + cache_bytes);
  absl::StatusOr<std::unique_ptr<KvCache>> again = cuda_->NewCache(Streaming(4, 64));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(cuda_->device_memory().used_bytes, before + cache_bytes);
  EXPECT_GE(cuda_->device_memory().peak_bytes, before + cache_bytes);
}

TEST_P(CudaBackendTest, RefusesForeignCachesAndBadTokens) {
  std::unique_ptr<KvCache> cpu_cache = *model_->backend().NewCache(Streaming(4, 16));
  std::vector<float> logits(vocab_);
  const std::vector<int32_t> token = {1};
  EXPECT_EQ(cuda_->Forward(token, *cpu_cache, logits, false).code(),
            absl::StatusCode::kInvalidArgument);
  std::unique_ptr<KvCache> cache = *cuda_->NewCache(Streaming(4, 16));
  const std::vector<int32_t> bad = {vocab_};
  EXPECT_EQ(cuda_->Forward(bad, *cache, logits, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->tokens_seen(), 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaBackendTest,
                         ::testing::ValuesIn(testing::FixtureModelNames()));

}  // namespace
}  // namespace sinkserve
