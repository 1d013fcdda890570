// Decode-step benchmarks on Pythia-160m- and 410m-shaped models with random weights (F32, F16,
// BF16 storage; int8 and NF4 quantized at load), against this machine's read bandwidth
// measured in the same run.
//
// The bound: a batch-1 decode step must read every weight matrix once (embed_in only one row)
// plus the KV cache it attends; step_time ≥ bytes / bandwidth. `bound_ratio` = achieved GB/s ÷
// measured GB/s (1.0 = at the memory-bandwidth floor).
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/int8_activations.h"
#include "engine/demo_model.h"
#include "engine/format/quantize_weights.h"
#include "engine/sampler.h"

namespace sinkserve {
namespace {

// The kernels every benchmark runs (--cpu-isa=auto|avx512|avx2|portable, read by main):
// running the binary once per isa, interleaved, compares them side by side.
cpu::CpuIsa g_isa = cpu::CpuIsa::kAuto;
// --cpu-activations=int8: BM_BlockMatVecOneThread runs cpu::MatMulInt8Activations instead.
cpu::Activations g_activations = cpu::Activations::kFp32;

// Best of several passes of a multi-threaded read of a 1 GiB buffer (far larger than the
// caches). This VM's bandwidth drifts by ±30% over minutes (other tenants), so every benchmark
// re-measures it right after its own loop and states its ratio against that neighbour.
double MeasureReadBandwidth(int passes = 4) {
  static ThreadPool pool(0);
  const size_t floats = size_t{1} << 28;
  static std::vector<float> buffer(floats, 1.0f);
  double best = 0;
  std::vector<float> sums(pool.size());
  for (int pass = 0; pass < passes; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    const int threads = pool.size();
    pool.ParallelFor(threads, 1, [&](int64_t thread, int64_t, int) {
      const size_t begin = floats * thread / threads, end = floats * (thread + 1) / threads;
      __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
      for (size_t i = begin; i + 32 <= end; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(&buffer[i]));
        b = _mm256_add_ps(b, _mm256_loadu_ps(&buffer[i + 8]));
        c = _mm256_add_ps(c, _mm256_loadu_ps(&buffer[i + 16]));
        d = _mm256_add_ps(d, _mm256_loadu_ps(&buffer[i + 24]));
      }
      float lanes[8];
      _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
      sums[thread] = lanes[0];
    });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, floats * sizeof(float) / seconds);
  }
  benchmark::DoNotOptimize(sums);
  return best;
}

// The same read on ONE thread, timed by that thread's CPU time: the bound of the one-thread
// CPU-time benchmarks below, unaffected (like them) by other tenants taking the core away. It
// reads 8 sequential streams at once, as the kernels' row tiles do (the prefetchers then keep
// more lines in flight than for one stream).
double MeasureOneThreadReadBandwidth(int passes = 3) {
  constexpr int kStreams = 8;
  const size_t floats = size_t{1} << 28, stream_floats = floats / kStreams;
  static std::vector<float> buffer(floats, 1.0f);
  double best = 0;
  __m256 sum = _mm256_setzero_ps();
  for (int pass = 0; pass < passes; ++pass) {
    timespec start{}, end{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    __m256 acc[kStreams];
    for (__m256& a : acc) a = _mm256_setzero_ps();
    for (size_t i = 0; i < stream_floats; i += 16) {
      for (int s = 0; s < kStreams; ++s) {
        const float* p = &buffer[s * stream_floats + i];
        acc[s] = _mm256_add_ps(acc[s], _mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)));
      }
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
    for (const __m256& a : acc) sum = _mm256_add_ps(sum, a);
    const double seconds = (end.tv_sec - start.tv_sec) + 1e-9 * (end.tv_nsec - start.tv_nsec);
    best = std::max(best, floats * sizeof(float) / seconds);
  }
  benchmark::DoNotOptimize(sum);
  return best;
}

ModelConfig Pythia160mConfig() {
  ModelConfig config;
  config.hidden_size = 768;
  config.num_layers = 12;
  config.num_heads = 12;
  config.head_dim = 64;
  config.intermediate_size = 3072;
  config.rotary_ndims = 16;
  config.vocab_size = 50304;
  config.max_position_embeddings = 2048;
  return config;
}

ModelConfig Pythia410mConfig() {
  ModelConfig config = Pythia160mConfig();
  config.hidden_size = 1024;
  config.num_layers = 24;
  config.num_heads = 16;
  config.intermediate_size = 4096;
  return config;  // head_dim 64, rotary 16 (rotary_pct 0.25), vocab 50304
}

// The 410m-shaped random model in a weight format, built once per process: one F16 draw
// (drawing 405M weights takes ~10 s here), viewed by each format's ModelWeights and converted
// from it as a checkpoint would be (the conversion only reads memory it does not own).
const ModelWeights& Pythia410mWeights(const WeightConversion& conversion) {
  static const ModelWeights f16 = RandomModelWeights(Pythia410mConfig(), 1234, DType::kF16);
  static std::map<std::tuple<WeightFormat, bool, bool>, std::unique_ptr<ModelWeights>> built;
  std::unique_ptr<ModelWeights>& weights =
      built[{conversion.format, conversion.double_quant, conversion.quantize_embeddings}];
  if (weights == nullptr) {
    weights = std::make_unique<ModelWeights>();
    weights->embed_in = f16.embed_in;
    weights->embed_out = f16.embed_out;
    weights->layers = f16.layers;
    weights->final_norm_weight = f16.final_norm_weight;
    weights->final_norm_bias = f16.final_norm_bias;
    ThreadPool pool(0);
    if (!ConvertWeights(conversion, *weights, pool).ok()) {
      std::abort();
    }
  }
  return *weights;
}

// Bytes a batch-1 decode step must read: every matrix, one embedding row, the KV it attends.
double StepBytes(const ModelConfig& config, const ModelWeights& weights, int context) {
  double bytes = weights.embed_out.bytes() + weights.embed_in.bytes() / config.vocab_size;
  for (const LayerWeights& layer : weights.layers) {
    bytes +=
        layer.qkv.bytes() + layer.attn_out.bytes() + layer.mlp_up.bytes() + layer.mlp_down.bytes();
  }
  bytes += 2.0 * config.num_layers * context * config.hidden_size * sizeof(float);
  return bytes;
}

// `seconds`: wall time of the timed iterations, measured by the caller.
void ReportBound(benchmark::State& state, double bytes_per_step, double seconds) {
  const double steps = static_cast<double>(state.iterations());
  const double bandwidth = MeasureReadBandwidth();
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_step * steps));
  state.counters["tok/s"] = steps / seconds;
  state.counters["MB/step"] = bytes_per_step / 1e6;
  state.counters["GB/s"] = bytes_per_step * steps / seconds / 1e9;
  state.counters["probe_GB/s"] = bandwidth / 1e9;
  state.counters["bound_ratio"] = bytes_per_step * steps / seconds / bandwidth;
}

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// One decode step (one token) at a context of ~state.range(1) tokens.
void BM_DecodeStep(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  const int context = static_cast<int>(state.range(1));
  const ModelConfig config = Pythia160mConfig();
  const ModelWeights weights = RandomModelWeights(config, 1234, dtype);
  CpuBackend backend(config, weights, 0, g_isa);
  std::unique_ptr<KvCache> cache = *backend.NewDenseCache(context + 1024);
  std::vector<float> logits(config.vocab_size);
  std::vector<int32_t> prompt(context);
  for (int i = 0; i < context; ++i) prompt[i] = (i * 7919) % config.vocab_size;
  if (!backend.Forward(prompt, *cache, logits, false).ok()) state.SkipWithError("prefill failed");
  int32_t token = 42;
  Clock::duration timed{};
  for (auto _ : state) {
    if (cache->tokens_cached() == cache->capacity_tokens()) {
      state.PauseTiming();
      cache->Reset();
      (void)backend.Forward(prompt, *cache, logits, false);
      state.ResumeTiming();
    }
    const Clock::time_point start = Clock::now();
    const int32_t step[1] = {token};
    if (!backend.Forward(step, *cache, logits, false).ok()) state.SkipWithError("step failed");
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    timed += Clock::now() - start;
  }
  state.SetLabel(std::string(DTypeName(dtype)) + " " + backend.name());
  ReportBound(state, StepBytes(config, weights, context), Seconds(timed));
}

// Puts `cache` in the state of having seen `tokens` tokens without running the model: the
// bookkeeping of exact steps, with the (zero) keys and values left as they are. A decode
// step's cost does not depend on the values, and a real 16k-token prefill would take minutes
// here.
void AdvanceWithoutCompute(KvCache& cache, int64_t tokens) {
  while (tokens > 0) {
    const int step = static_cast<int>(std::min<int64_t>(tokens, cache.MaxStepTokens()));
    if (step < 1 || !cache.BeginStep(step).ok()) return;
    cache.EndStep();
    tokens -= step;
  }
}

// One decode step after a stream of state.range(1) tokens, with a dense cache
// (range(0) = 0) or the default streaming cache (sink 4 + window 256, range(0) = 1). Streaming
// must stay flat in time and memory while dense grows with the stream. The stream is built
// with exact chunked prefill (the same cache state token-by-token feeding would give).
void BM_DecodeVsStreamLength(benchmark::State& state) {
  const bool streaming = state.range(0) == 1;
  const int stream = static_cast<int>(state.range(1));
  ModelConfig config = Pythia160mConfig();
  config.max_position_embeddings = stream + 4096;  // random weights: no learned limit applies
  const ModelWeights weights = RandomModelWeights(config, 1234, DType::kF16);
  CpuBackend backend(config, weights, 0, g_isa);
  CachePolicy policy;  // streaming, sink 4, window 256
  if (!streaming) {
    policy.kind = CachePolicy::Kind::kCachePolicyDense;
    policy.dense_capacity_tokens = stream + 4096;
  }
  std::unique_ptr<KvCache> cache = *backend.NewCache(policy);
  std::vector<float> logits(config.vocab_size);
  AdvanceWithoutCompute(*cache, stream);
  int32_t token = 42;
  Clock::duration timed{};
  double attention = 0;
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    const int32_t step[1] = {token};
    if (!backend.Forward(step, *cache, logits, false).ok()) state.SkipWithError("step failed");
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    timed += Clock::now() - start;
    attention += backend.last_step_attention_seconds();
  }
  state.SetLabel("F16 " + cache->Describe());
  ReportBound(state, StepBytes(config, weights, cache->tokens_cached()), Seconds(timed));
  state.counters["attn_ms/step"] = 1e3 * attention / static_cast<double>(state.iterations());
  state.counters["kv_MB"] = cache->bytes() / 1e6;
}

// One batched decode step for N streaming sessions (sink 4, window 256, steady state): the
// weights are read once for all N, so tokens/s should grow almost N-fold at small N.
void BM_DecodeBatch(benchmark::State& state) {
  const int sessions = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));  // 0 = every core
  const ModelConfig config = Pythia160mConfig();
  const ModelWeights weights = RandomModelWeights(config, 1234, DType::kF16);
  CpuBackend backend(config, weights, threads, g_isa);
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<KvCache*> rows;
  std::vector<float> logits(static_cast<size_t>(sessions) * config.vocab_size);
  for (int s = 0; s < sessions; ++s) {
    caches.push_back(*backend.NewCache(CachePolicy{}));
    rows.push_back(caches.back().get());
    AdvanceWithoutCompute(*caches.back(), 300 + s);
  }
  std::vector<int32_t> tokens(sessions, 42);
  Clock::duration timed{};
  double attention_seconds = 0;
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    if (!backend.ForwardBatch(tokens, rows, logits).ok()) state.SkipWithError("step failed");
    timed += Clock::now() - start;
    attention_seconds += backend.last_step_attention_seconds();
  }
  state.SetLabel(
      "F16, " + std::to_string(sessions) + " streaming sessions, " +
      (threads == 0 ? std::string("every core") : std::to_string(threads) + " thread(s)"));
  state.counters["attn_ms/step"] =
      1e3 * attention_seconds / static_cast<double>(state.iterations());
  ReportBound(state, StepBytes(config, weights, sessions * caches[0]->tokens_cached()),
              Seconds(timed));
  state.counters["tok/s"] = sessions * static_cast<double>(state.iterations()) / Seconds(timed);
}

// Decode tokens/s of the 410m-shaped model per weight format (range(0): WeightFormat,
// range(1): 1 = NF4 double-quant absmax, range(3): 1 = embeddings quantized too) and batch
// size (range(2) streaming sessions, sink 4 + window 256, ~300 tokens in). The bound counts
// every byte the step must read: all matrices in their format (codes + statistics), one
// embedding row, each session's KV cache.
void BM_DecodeQuant(benchmark::State& state) {
  const WeightConversion conversion{static_cast<WeightFormat>(state.range(0)), state.range(1) == 1,
                                    state.range(3) == 1};
  const int sessions = static_cast<int>(state.range(2));
  const ModelConfig config = Pythia410mConfig();
  const ModelWeights& weights = Pythia410mWeights(conversion);
  CpuBackend backend(config, weights, 0, g_isa);
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<KvCache*> rows;
  for (int s = 0; s < sessions; ++s) {
    caches.push_back(*backend.NewCache(CachePolicy{}));
    rows.push_back(caches.back().get());
    AdvanceWithoutCompute(*caches.back(), 300 + s);
  }
  std::vector<float> logits(static_cast<size_t>(sessions) * config.vocab_size);
  std::vector<int32_t> tokens(sessions, 42);
  Clock::duration timed{};
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    if (!backend.ForwardBatch(tokens, rows, logits).ok()) state.SkipWithError("step failed");
    timed += Clock::now() - start;
  }
  state.SetLabel(conversion.Describe(weights) + ", " + std::to_string(sessions) + " session(s), " +
                 std::to_string(weights.bytes() / 1000000) + " MB of weights");
  ReportBound(state, StepBytes(config, weights, sessions * caches[0]->tokens_cached()),
              Seconds(timed));
  state.counters["tok/s"] = sessions * static_cast<double>(state.iterations()) / Seconds(timed);
}

// Every matrix of a model once, batch 1: the matrix-vector work of one step alone.
std::vector<const Matrix*> StepMatrices(const ModelWeights& weights) {
  std::vector<const Matrix*> matrices;
  for (const LayerWeights& layer : weights.layers) {
    for (const Matrix* m : {&layer.qkv, &layer.attn_out, &layer.mlp_up, &layer.mlp_down}) {
      matrices.push_back(m);
    }
  }
  matrices.push_back(&weights.embed_out);
  return matrices;
}

void BM_StepMatVec(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  const ModelConfig config = Pythia160mConfig();
  const ModelWeights weights = RandomModelWeights(config, 1234, dtype);
  ThreadPool pool(0);
  std::vector<float> x(config.intermediate_size, 0.5f), y(config.vocab_size);
  const std::vector<const Matrix*> matrices = StepMatrices(weights);
  double bytes = 0;
  for (const Matrix* m : matrices) bytes += m->bytes();
  const Clock::time_point start = Clock::now();
  for (auto _ : state) {
    for (const Matrix* m : matrices) cpu::MatMul(*m, nullptr, x.data(), 1, y.data(), pool, g_isa);
    benchmark::ClobberMemory();
  }
  const double seconds = Seconds(Clock::now() - start);
  state.SetLabel(std::string(DTypeName(dtype)) + " " + cpu::CpuIsaName(g_isa));
  ReportBound(state, bytes, seconds);
}

// The block matrices of the 410m shape for range(1) tokens at once (1: a decode step; 4-16: a
// batched step; 64-512: a prompt chunk) on ONE thread, timed by that thread's CPU time (the
// default of Google Benchmark without UseRealTime): what each format's kernel costs per
// weight, unaffected by other tenants taking the second core (this VM is shared; the 2-thread
// wall-clock numbers move with them). The LM head is left out (F16 in every format).
void BM_BlockMatVecOneThread(benchmark::State& state) {
  const WeightConversion conversion{static_cast<WeightFormat>(state.range(0)), false, false};
  const int tokens = static_cast<int>(state.range(1));
  const ModelWeights& weights = Pythia410mWeights(conversion);
  ThreadPool pool(1);
  const ModelConfig config = Pythia410mConfig();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(tokens) * config.intermediate_size);
  for (float& value : x) value = normal(rng);
  std::vector<float> y(static_cast<size_t>(tokens) * config.intermediate_size);  // ≥ 3H rows
  std::vector<const Matrix*> matrices = StepMatrices(weights);
  matrices.pop_back();  // the LM head
  double bytes = 0, elements = 0;
  for (const Matrix* m : matrices) bytes += m->bytes(), elements += m->rows * m->cols;
  for (auto _ : state) {
    for (const Matrix* m : matrices) {
      if (g_activations == cpu::Activations::kInt8) {
        cpu::MatMulInt8Activations(*m, nullptr, x.data(), tokens, y.data(), pool, g_isa);
      } else {
        cpu::MatMul(*m, nullptr, x.data(), tokens, y.data(), pool, g_isa);
      }
    }
    benchmark::ClobberMemory();
  }
  const double steps = static_cast<double>(state.iterations());
  const bool int8 = g_activations == cpu::Activations::kInt8;
  state.SetLabel(conversion.Describe(weights) + ", " + std::to_string(tokens) + " token(s), " +
                 (int8 ? cpu::Int8ActivationsIsaName(g_isa) : cpu::CpuIsaName(g_isa)) +
                 (int8 ? ", int8 activations" : "") + ", 1 thread, CPU time");
  state.SetBytesProcessed(static_cast<int64_t>(bytes * steps));
  state.counters["MB/step"] = bytes / 1e6;
  // The weights' bytes per CPU-second ÷ one thread's read bandwidth per CPU-second, measured
  // right after (a step of any batch must read them once).
  state.counters["bound_ratio"] = benchmark::Counter(
      bytes * steps / MeasureOneThreadReadBandwidth(), benchmark::Counter::kIsRate);
  state.counters["Gweights/s"] =
      benchmark::Counter(elements * steps / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2 * elements * tokens * steps / 1e9, benchmark::Counter::kIsRate);
  state.counters["tok/s"] = benchmark::Counter(tokens * steps, benchmark::Counter::kIsRate);
}

// The matrix work of one batched step of the 160m shape (all 49 matrices × N tokens) on ONE
// thread, CPU time: past a few rows a CPU step is compute-bound, so this is the kernel's FMA
// throughput (GFLOP/s) — what continuous batching gains from — unaffected by the other core.
void BM_StepMatMulOneThread(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  const int tokens = static_cast<int>(state.range(1));
  const ModelConfig config = Pythia160mConfig();
  const ModelWeights weights = RandomModelWeights(config, 1234, dtype);
  ThreadPool pool(1);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> x(int64_t{tokens} * config.intermediate_size);
  for (float& value : x) value = normal(rng);
  std::vector<float> y(int64_t{tokens} * config.vocab_size);
  const std::vector<const Matrix*> matrices = StepMatrices(weights);
  double flops = 0;
  for (const Matrix* m : matrices) flops += 2.0 * m->rows * m->cols * tokens;
  for (auto _ : state) {
    for (const Matrix* m : matrices)
      cpu::MatMul(*m, nullptr, x.data(), tokens, y.data(), pool, g_isa);
    benchmark::ClobberMemory();
  }
  state.SetLabel(std::string(DTypeName(dtype)) + " " + cpu::CpuIsaName(g_isa) +
                 ", 1 thread, CPU time");
  state.counters["GFLOP/s"] = benchmark::Counter(
      flops * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["tok/s"] = benchmark::Counter(tokens * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

// One sampled token from a Pythia-sized vocabulary (50,304 logits, N(0, 3): a flatter
// distribution than a trained model's, so the top-p nucleus holds hundreds of tokens): the host
// time a scheduler spends per row after each step.
void BM_Sample(benchmark::State& state) {
  const std::vector<float> logits = [] {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> values(50304);
    for (float& v : values) v = normal(rng);
    return values;
  }();
  SamplingParams params;
  params.temperature = state.range(0) / 100.0f;
  params.top_k = static_cast<int>(state.range(1));
  params.top_p = state.range(2) / 100.0f;
  params.repetition_penalty = state.range(3) / 100.0f;
  params.seed = 5;
  state.SetLabel(absl::StrCat("temperature ", params.temperature, " top_k ", params.top_k,
                              " top_p ", params.top_p, " penalty ", params.repetition_penalty));
  std::vector<int32_t> history(256);
  for (size_t i = 0; i < history.size(); ++i) history[i] = static_cast<int32_t>(i * 197 % 50304);
  Sampler sampler(params);
  std::vector<float> scratch(logits.size());
  for (auto _ : state) {
    std::copy(logits.begin(), logits.end(), scratch.begin());
    benchmark::DoNotOptimize(sampler.Sample(scratch, history));
  }
}

constexpr int64_t kF32 = static_cast<int64_t>(DType::kF32);
constexpr int64_t kF16 = static_cast<int64_t>(DType::kF16);
constexpr int64_t kBF16 = static_cast<int64_t>(DType::kBF16);

constexpr int64_t kFp32 = static_cast<int64_t>(WeightFormat::kF32);
constexpr int64_t kFp16 = static_cast<int64_t>(WeightFormat::kF16);
constexpr int64_t kInt8 = static_cast<int64_t>(WeightFormat::kInt8);
constexpr int64_t kNf4 = static_cast<int64_t>(WeightFormat::kNf4);

// Formats side by side at each batch size, so that they share the bandwidth of the moment.
BENCHMARK(BM_DecodeQuant)
    ->Args({kFp32, 0, 1, 0})
    ->Args({kFp16, 0, 1, 0})
    ->Args({kInt8, 0, 1, 0})
    ->Args({kNf4, 0, 1, 0})
    ->Args({kNf4, 1, 1, 0})
    ->Args({kInt8, 0, 1, 1})
    ->Args({kNf4, 0, 1, 1})
    ->Args({kFp32, 0, 8, 0})
    ->Args({kFp16, 0, 8, 0})
    ->Args({kInt8, 0, 8, 0})
    ->Args({kNf4, 0, 8, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);
BENCHMARK(BM_BlockMatVecOneThread)
    ->ArgsProduct({{kFp16, kInt8, kNf4}, {1, 16, 128}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);
BENCHMARK(BM_StepMatMulOneThread)
    ->Args({kF16, 1})
    ->Args({kF16, 4})
    ->Args({kF16, 16})
    ->Args({kF32, 16})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StepMatVec)
    ->Arg(kF32)
    ->Arg(kF16)
    ->Arg(kBF16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);
BENCHMARK(BM_DecodeStep)
    ->Args({kF32, 128})
    ->Args({kF16, 128})
    ->Args({kF16, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);
BENCHMARK(BM_DecodeVsStreamLength)
    ->ArgsProduct({{0, 1}, {256, 1024, 4096, 16384}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(1.0);
BENCHMARK(BM_Sample)
    ->Args({0, 0, 100, 100})
    ->Args({80, 0, 100, 100})
    ->Args({80, 0, 90, 100})
    ->Args({80, 50, 100, 100})
    ->Args({80, 50, 90, 100})
    ->Args({100, 0, 95, 110})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeBatch)
    ->Args({1, 0})
    ->Args({4, 0})
    ->Args({16, 0})
    ->Args({1, 1})
    ->Args({16, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) {
  // --cpu-isa=NAME is ours; the rest goes to Google Benchmark.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--cpu-isa=")) {
      const std::optional<sinkserve::cpu::CpuIsa> isa =
          sinkserve::cpu::ParseCpuIsa(arg.substr(arg.find('=') + 1));
      if (!isa || !sinkserve::cpu::CpuSupports(*isa)) {
        std::fprintf(stderr, "--cpu-isa: unknown, or not supported by this CPU: %s\n", argv[i]);
        return 2;
      }
      sinkserve::g_isa = *isa;
    } else if (arg.starts_with("--cpu-activations=")) {
      const std::optional<sinkserve::cpu::Activations> activations =
          sinkserve::cpu::ParseActivations(arg.substr(arg.find('=') + 1));
      if (!activations) {
        std::fprintf(stderr, "--cpu-activations: fp32 or int8, not %s\n", argv[i]);
        return 2;
      }
      sinkserve::g_activations = *activations;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("cpu_isa", sinkserve::cpu::CpuIsaName(sinkserve::g_isa));
  benchmark::AddCustomContext("read_bandwidth_GBps_at_start",
                              std::to_string(sinkserve::MeasureReadBandwidth(8) / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
