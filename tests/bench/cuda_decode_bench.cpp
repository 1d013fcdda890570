// Decode speed and memory of the CUDA backend on a model of a real size with random weights
// (default: Pythia-2.8B's shape), for the configurations of the benchmark table
// (docs/benchmark-protocol.md): dense fp16, streaming fp16, streaming int8, streaming NF4
// (double-quantized absmax, as the seed) × decode batch sizes. The seed's protocol: a 500-token
// prompt per session, then greedy decode. Prints a Markdown table and writes JSON (--out DIR).
//
// TPOT here is the time of one batched greedy decode step (Backend::ForwardBatchGreedy): the
// device work, the argmax on the device and the copy of the ids to the host (what a scheduler
// waits for); what the host then does with them is the "sampling" column.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "common/base/half.h"
#include "engine/sampler.h"
#include "common/base/thread_pool.h"
#include "nlohmann/json.hpp"
#include "engine/format/quantize_weights.h"

namespace sinkserve {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string out_dir;
  int prompt_tokens = 500;
  int generate_tokens = 500;          // batch 1
  int generate_tokens_batched = 64;   // larger batches (throughput is steady by then)
  std::vector<int> batches = {1, 16, 64};
  int layers = 32, hidden = 2560, heads = 32, vocab = 50304;
};

ModelConfig Pythia28bShape(const Options& o) {
  ModelConfig config;
  config.hidden_size = o.hidden;
  config.num_layers = o.layers;
  config.num_heads = o.heads;
  config.head_dim = o.hidden / o.heads;
  config.intermediate_size = 4 * o.hidden;
  config.rotary_ndims = config.head_dim / 4;
  config.vocab_size = o.vocab;
  config.max_position_embeddings = 2048;
  return config;
}

// Random fp16 weights, filled in parallel (counter-based, so any thread count gives the same
// model): uniform with the variance of N(0, 1/fan_in).
ModelWeights FastRandomWeights(const ModelConfig& config, ThreadPool& pool) {
  ModelWeights weights;
  uint64_t stream = 0;
  auto matrix = [&](int64_t rows, int64_t cols) {
    auto buffer = std::make_unique<std::byte[]>(rows * cols * 2);
    uint16_t* values = reinterpret_cast<uint16_t*>(buffer.get());
    const float bound = std::sqrt(3.0f / static_cast<float>(cols));
    const uint64_t seed = ++stream * 0x9e3779b97f4a7c15ull;
    pool.ParallelFor(rows * cols, 1 << 16, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) {
        uint64_t z = seed + static_cast<uint64_t>(i) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
        z ^= z >> 29;
        const float unit = static_cast<float>(z >> 40) * 0x1.0p-24f;  // [0, 1)
        values[i] = FloatToF16((2.0f * unit - 1.0f) * bound);
      }
    });
    Matrix m{DType::kF16, rows, cols, buffer.get()};
    weights.owned.push_back(std::move(buffer));
    return m;
  };
  auto vector = [](int64_t n, float value) { return std::vector<float>(n, value); };
  const int64_t h = config.hidden_size, f = config.intermediate_size, v = config.vocab_size;
  weights.embed_in = matrix(v, h);
  for (int i = 0; i < config.num_layers; ++i) {
    LayerWeights layer;
    layer.input_norm_weight = layer.post_norm_weight = vector(h, 1.0f);
    layer.input_norm_bias = layer.post_norm_bias = vector(h, 0.0f);
    layer.qkv = matrix(3 * h, h);
    layer.qkv_bias = vector(3 * h, 0.01f);
    layer.attn_out = matrix(h, h);
    layer.attn_out_bias = vector(h, 0.01f);
    layer.mlp_up = matrix(f, h);
    layer.mlp_up_bias = vector(f, 0.01f);
    layer.mlp_down = matrix(h, f);
    layer.mlp_down_bias = vector(h, 0.01f);
    weights.layers.push_back(std::move(layer));
  }
  weights.final_norm_weight = vector(h, 1.0f);
  weights.final_norm_bias = vector(h, 0.0f);
  weights.embed_out = matrix(v, h);
  return weights;
}

struct Result {
  std::string config;
  int batch = 0;
  double tokens_per_second = 0, tpot_ms = 0, ttft_ms = 0, attention_us_per_layer = 0;
  double sampling_ms = 0;
  double peak_gb = 0, weights_gb = 0;
  int64_t graph_launches = 0;  // steps so far replayed from CUDA graphs
};

void Die(const absl::Status& status) {
  std::fprintf(stderr, "cuda_decode_bench: %s\n", std::string(status.message()).c_str());
  std::exit(1);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::vector<Result> RunConfig(const std::string& name, const ModelConfig& config,
                              const ModelWeights& weights, const CachePolicy& policy,
                              const Options& o, const CudaOptions& cuda_options,
                              std::vector<int> batches) {
  absl::StatusOr<std::unique_ptr<Backend>> made = NewCudaBackend(config, weights, cuda_options);
  if (!made.ok()) Die(made.status());
  Backend& backend = **made;
  const double weights_gb = backend.device_memory().used_bytes / 1e9;
  std::vector<Result> results;
  std::mt19937_64 rng(7);
  const int vocab = config.vocab_size;
  for (int batch : batches) {
    const int steps = batch == 1 ? o.generate_tokens : o.generate_tokens_batched;
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<KvCache*> rows;
    std::vector<float> logits(static_cast<size_t>(batch) * vocab);
    std::vector<int32_t> next(batch);
    // Prefill as a continuous-batching server does: each prompt in the largest exact chunks
    // (≤ 256 tokens), then what a full streaming cache takes one token at a time in batched
    // steps across the sessions.
    std::vector<std::vector<int32_t>> prompts(batch, std::vector<int32_t>(o.prompt_tokens));
    std::vector<size_t> fed(batch, 0);
    const auto prefill_start = Clock::now();
    for (int b = 0; b < batch; ++b) {
      absl::StatusOr<std::unique_ptr<KvCache>> cache = backend.NewCache(policy);
      if (!cache.ok()) Die(cache.status());
      for (int32_t& t : prompts[b]) t = static_cast<int32_t>(rng() % vocab);
      std::span<float> row_logits = std::span(logits).subspan(static_cast<size_t>(b) * vocab, vocab);
      while (fed[b] < prompts[b].size() && (fed[b] == 0 || (*cache)->MaxStepTokens() > 1)) {
        const size_t n = std::min<size_t>({prompts[b].size() - fed[b], 256,
                                           static_cast<size_t>((*cache)->MaxStepTokens())});
        if (absl::Status s = backend.Forward(std::span(prompts[b]).subspan(fed[b], n), **cache,
                                             row_logits, false);
            !s.ok()) {
          Die(s);
        }
        fed[b] += n;
      }
      rows.push_back(cache->get());
      caches.push_back(std::move(*cache));
    }
    for (size_t position = *std::min_element(fed.begin(), fed.end());
         position < static_cast<size_t>(o.prompt_tokens); ++position) {
      std::vector<int32_t> column;
      std::vector<KvCache*> column_rows;
      for (int b = 0; b < batch; ++b) {
        if (fed[b] > position) continue;
        column.push_back(prompts[b][position]);
        column_rows.push_back(rows[b]);
      }
      std::vector<float> column_logits(column.size() * vocab);
      if (absl::Status s = backend.ForwardBatch(column, column_rows, column_logits); !s.ok()) Die(s);
      if (position + 1 == static_cast<size_t>(o.prompt_tokens)) {
        for (size_t i = 0; i < column.size(); ++i) {
          std::copy_n(&column_logits[i * vocab], vocab, &logits[static_cast<size_t>(i) * vocab]);
        }
      }
      for (int b = 0; b < batch; ++b) fed[b] = std::max(fed[b], position + 1);
    }
    const double ttft_ms = batch == 1 ? Ms(Clock::now() - prefill_start) : 0;
    for (int b = 0; b < batch; ++b) {
      next[b] = Argmax(std::span(logits).subspan(static_cast<size_t>(b) * vocab, vocab));
    }
    double step_ms = 0, sampling_ms = 0, attention_s = 0;
    const int warmup = 3;
    // Greedy decoding with the argmax on the device: each step copies back `batch` ids, not
    // batch × vocab logits (the sampling column is then ~0).
    std::vector<int32_t> following(batch);
    for (int step = 0; step < steps + warmup; ++step) {
      const auto start = Clock::now();
      if (absl::Status s = backend.ForwardBatchGreedy(next, rows, logits, following); !s.ok()) {
        Die(s);
      }
      const auto forward_end = Clock::now();
      next.swap(following);
      if (step >= warmup) {
        step_ms += Ms(forward_end - start);
        sampling_ms += Ms(Clock::now() - forward_end);
        attention_s += backend.last_step_attention_seconds();
      }
    }
    Result r;
    r.config = name;
    r.batch = batch;
    r.tpot_ms = step_ms / steps;
    r.tokens_per_second = batch * steps / (step_ms / 1e3);
    r.ttft_ms = ttft_ms;
    r.sampling_ms = sampling_ms / steps;
    r.attention_us_per_layer = attention_s / steps / config.num_layers * 1e6;
    r.peak_gb = backend.device_memory().peak_bytes / 1e9;
    r.weights_gb = weights_gb;
    r.graph_launches = CudaGraphLaunches(backend);
    std::printf("  %-34s batch %3d: %9.1f tok/s  TPOT %7.3f ms  TTFT %8.2f ms  attn %7.2f us/layer  "
                "sampling %.3f ms  peak %.2f GB  graph steps %lld\n",
                name.c_str(), batch, r.tokens_per_second, r.tpot_ms, r.ttft_ms,
                r.attention_us_per_layer, r.sampling_ms, r.peak_gb,
                static_cast<long long>(r.graph_launches));
    std::fflush(stdout);
    results.push_back(r);
  }
  return results;
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    values.push_back(std::stoi(text.substr(begin, end - begin)));
    begin = end + 1;
  }
  return values;
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--out") o.out_dir = value();
    else if (arg == "--prompt") o.prompt_tokens = std::stoi(value());
    else if (arg == "--gen") o.generate_tokens = std::stoi(value());
    else if (arg == "--gen-batched") o.generate_tokens_batched = std::stoi(value());
    else if (arg == "--batches") o.batches = ParseList(value());
    else if (arg == "--layers") o.layers = std::stoi(value());
    else if (arg == "--hidden") o.hidden = std::stoi(value());
    else if (arg == "--heads") o.heads = std::stoi(value());
    else {
      std::fprintf(stderr,
                   "usage: cuda_decode_bench [--out DIR] [--prompt 500] [--gen 500] "
                   "[--gen-batched 128] [--batches 1,16,64] [--layers 32 --hidden 2560 --heads 32]\n");
      return 2;
    }
  }
  if (absl::Status status = CudaAvailable(); !status.ok()) Die(status);
  const ModelConfig config = Pythia28bShape(o);
  std::printf("model: %s, %.2f B parameters, random fp16 weights\n", config.Describe().c_str(),
              config.ParameterCount() / 1e9);
  ThreadPool pool(0);
  const auto start = Clock::now();
  std::optional<ModelWeights> fp16 = FastRandomWeights(config, pool);
  std::printf("weights generated in %.1f s\n", Ms(Clock::now() - start) / 1e3);

  CachePolicy dense;
  dense.kind = CachePolicy::Kind::kCachePolicyDense;
  dense.dense_capacity_tokens = o.prompt_tokens + std::max(o.generate_tokens, o.generate_tokens_batched) + 8;
  const CachePolicy streaming;  // sink 4, window 256
  std::vector<Result> results;
  auto add = [&](std::vector<Result> more) { results.insert(results.end(), more.begin(), more.end()); };
  add(RunConfig("Baseline (FP16, dense cache)", config, *fp16, dense, o, CudaOptions{}, o.batches));
  add(RunConfig("Streaming (FP16)", config, *fp16, streaming, o, CudaOptions{}, o.batches));
  CudaOptions untimed;
  untimed.attention_timing_every = 0;
  add(RunConfig("Streaming (FP16), attention untimed", config, *fp16, streaming, o, untimed, {1}));
  CudaOptions eager;
  eager.graphs = false;
  add(RunConfig("Streaming (FP16), no CUDA graphs", config, *fp16, streaming, o, eager, {1, 64}));
  CudaOptions programmatic;
  programmatic.programmatic_launch = true;
  add(RunConfig("Streaming (FP16), programmatic launch", config, *fp16, streaming, o, programmatic,
                {1}));
  CudaOptions programmatic_untimed = programmatic;
  programmatic_untimed.attention_timing_every = 0;
  add(RunConfig("Streaming (FP16), programmatic launch, attention untimed", config, *fp16,
                streaming, o, programmatic_untimed, {1}));
  CudaOptions embeddings_on_device;
  embeddings_on_device.embeddings_on_host = false;
  add(RunConfig("Streaming (FP16), embeddings on the device", config, *fp16, streaming, o,
                embeddings_on_device, {1}));
  fp16.reset();
  // Load-time quantization converts in place: a fresh fp16 model for each format.
  auto quantized = [&](const WeightConversion& conversion) {
    ModelWeights weights = FastRandomWeights(config, pool);
    const auto q = Clock::now();
    if (absl::Status s = ConvertWeights(conversion, weights, pool); !s.ok()) Die(s);
    std::printf("%s: quantized in %.1f s\n", conversion.Describe(weights).c_str(),
                Ms(Clock::now() - q) / 1e3);
    return weights;
  };
  add(RunConfig("Streaming + Int8", config, quantized({WeightFormat::kInt8, false, false}),
                streaming, o, CudaOptions{}, o.batches));
  add(RunConfig("Streaming + NF4", config, quantized({WeightFormat::kNf4, true, false}), streaming,
                o, CudaOptions{}, o.batches));

  // Peak memory in GB (10⁹ bytes) and GiB (2³⁰): the seed's "GB" are torch's bytes / 2³⁰ (its
  // fp16 figure, 5.31, is below the 5.55·10⁹ bytes of the fp16 weights alone otherwise).
  std::printf("\n| Configuration | Batch | Throughput (tok/s) | TPOT (ms) | TTFT (ms) | Avg Attn (us/layer) | Peak Mem (GB) | Peak Mem (GiB) | After load (GB) |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  nlohmann::json json = nlohmann::json::array();
  for (const Result& r : results) {
    std::printf("| %s | %d | %.1f | %.3f | %.2f | %.2f | %.3f | %.3f | %.2f |\n", r.config.c_str(),
                r.batch, r.tokens_per_second, r.tpot_ms, r.ttft_ms, r.attention_us_per_layer,
                r.peak_gb, r.peak_gb * 1e9 / (1 << 30), r.weights_gb);
    json.push_back({{"config", r.config}, {"batch", r.batch},
                    {"tokens_per_second", r.tokens_per_second}, {"tpot_ms", r.tpot_ms},
                    {"ttft_ms", r.ttft_ms}, {"attention_us_per_layer", r.attention_us_per_layer},
                    {"sampling_ms", r.sampling_ms}, {"peak_gpu_memory_gb", r.peak_gb},
                    {"graph_launches", r.graph_launches},
                    {"weights_gb", r.weights_gb}, {"prompt_tokens", o.prompt_tokens}});
  }
  if (!o.out_dir.empty()) {
    std::ofstream(o.out_dir + "/cuda_decode_bench.json") << json.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::Main(argc, argv); }
