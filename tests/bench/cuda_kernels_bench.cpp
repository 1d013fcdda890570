// The CUDA kernels one at a time on Pythia-2.8B's shapes (Google Benchmark, times from CUDA
// events): where a decode step's time goes, each against its bound (bytes it must read over the
// copy bandwidth measured in the same run, BM_CopyBandwidth).
//
// Each iteration replays a CUDA graph of kLaunches launches (launch gaps as in the backend's
// graphs) and reports the time per launch. Weights and caches rotate over copies that together
// exceed the L2 cache, so every launch reads device memory as a real step does.
//
// Counters: bytes_per_second = the bytes a launch must read (weights; keys and values) per
// second of its time. Skips every benchmark, with the reason, where no CUDA device is usable.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/device_memory.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/kernels.h"
#include "common/base/half.h"

namespace sinkserve::cuda {
namespace {

// Pythia-2.8B.
constexpr int kHidden = 2560, kHeads = 32, kHeadDim = 80, kRotary = 20, kFfn = 10240;
constexpr int kVocab = 50304, kLayers = 32;
constexpr int kLaunches = 32;                 // per graph replay
constexpr size_t kRotateBytes = size_t{256} << 20;  // > 5× an H100's 50 MB L2

// The device and a stream for all benchmarks; the reason when there is none.
struct Device {
  std::string unusable;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  DeviceAllocator allocator;
};

Device& TheDevice() {
  static Device* device = [] {
    auto* d = new Device;
    if (absl::Status status = CudaAvailable(); !status.ok()) {
      d->unusable = std::string(status.message());
      return d;
    }
    cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
    cudaEventCreate(&d->start);
    cudaEventCreate(&d->stop);
    return d;
  }();
  return *device;
}

// `bytes` bytes on the device holding `pattern` repeated (random data: never zeros).
DeviceArray<std::byte> Filled(size_t bytes, const std::vector<std::byte>& pattern) {
  DeviceArray<std::byte> array = *DeviceArray<std::byte>::Make(TheDevice().allocator, bytes, "bench");
  for (size_t offset = 0; offset < bytes; offset += pattern.size()) {
    cudaMemcpy(array.get() + offset, pattern.data(), std::min(pattern.size(), bytes - offset),
               cudaMemcpyHostToDevice);
  }
  return array;
}

// 16 MB of random fp16 values in [-1, 1) (bytes for every format: int8 and NF4 codes are
// any bytes, fp16 values must not be NaN or infinity).
const std::vector<std::byte>& RandomPattern() {
  static const std::vector<std::byte> pattern = [] {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<Half> values(size_t{8} << 20);
    for (Half& h : values) h = FloatToF16(uniform(rng));
    const auto* bytes = reinterpret_cast<const std::byte*>(values.data());
    return std::vector<std::byte>(bytes, bytes + values.size() * sizeof(Half));
  }();
  return pattern;
}

// Times enqueue(launch, stream) for launch in [0, kLaunches) as one graph replay per iteration.
void TimeGraph(benchmark::State& state, const std::function<void(int, cudaStream_t)>& enqueue,
               double bytes_per_launch) {
  Device& device = TheDevice();
  if (!device.unusable.empty()) {
    state.SkipWithError(device.unusable.c_str());
    return;
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaStreamBeginCapture(device.stream, cudaStreamCaptureModeThreadLocal);
  for (int i = 0; i < kLaunches; ++i) enqueue(i, device.stream);
  cudaError_t error = cudaStreamEndCapture(device.stream, &graph);
  if (error == cudaSuccess) error = cudaGraphInstantiate(&exec, graph, 0);
  if (error == cudaSuccess) error = cudaGraphLaunch(exec, device.stream);  // warm-up
  if (error == cudaSuccess) error = cudaStreamSynchronize(device.stream);
  for (auto _ : state) {
    if (error != cudaSuccess) break;
    cudaEventRecord(device.start, device.stream);
    cudaGraphLaunch(exec, device.stream);
    cudaEventRecord(device.stop, device.stream);
    error = cudaEventSynchronize(device.stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, device.start, device.stop);
    state.SetIterationTime(ms * 1e-3 / kLaunches);
  }
  if (error == cudaSuccess) error = cudaGetLastError();
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (error != cudaSuccess) {
    cudaGetLastError();
    state.SkipWithError(cudaGetErrorString(error));
    return;
  }
  state.counters["bytes_per_second"] =
      benchmark::Counter(bytes_per_launch, benchmark::Counter::kIsIterationInvariantRate);
}

// The copy bandwidth ceiling: bytes read + bytes written per second of a 1 GiB device copy.
void BM_CopyBandwidth(benchmark::State& state) {
  if (!TheDevice().unusable.empty()) return state.SkipWithError(TheDevice().unusable.c_str());
  const size_t bytes = size_t{1} << 30;
  DeviceArray<std::byte> from = Filled(bytes, RandomPattern());
  DeviceArray<std::byte> to = Filled(bytes, RandomPattern());
  TimeGraph(state, [&](int, cudaStream_t stream) {
    cudaMemcpyAsync(to.get(), from.get(), bytes, cudaMemcpyDeviceToDevice, stream);
  }, 2.0 * bytes);
}
BENCHMARK(BM_CopyBandwidth)->UseManualTime()->Unit(benchmark::kMicrosecond);

enum Format { kF16, kInt8, kNf4 };
const char* const kFormatNames[] = {"fp16", "int8", "nf4"};
struct Shape {
  const char* name;
  int64_t rows, cols;
};
const Shape kShapes[] = {{"qkv", 3 * kHidden, kHidden},
                         {"attn_out", kHidden, kHidden},
                         {"mlp_up", kFfn, kHidden},
                         {"mlp_down", kHidden, kFfn},
                         {"lm_head", kVocab, kHidden}};

// A weight matrix in `format` (NF4 double-quantized, as the benchmark table's), in as many
// copies as rotating through kRotateBytes takes.
struct Weights {
  std::vector<DeviceArray<std::byte>> codes;
  DeviceArray<std::byte> absmax, absmax_codes, block_scale, dynamic_map;
  std::vector<DeviceMatrixView> views;
  size_t bytes = 0;  // one copy: what a product must read

  Weights(Format format, const Shape& shape) {
    const int64_t n = shape.rows * shape.cols;
    const size_t code_bytes = format == kF16 ? 2 * n : format == kInt8 ? n : n / 2;
    // Scales: any positive floats (int8 per row; NF4 per 64 through one byte and a per-256 scale).
    std::vector<float> scales(std::max<int64_t>(shape.rows, n / 64), 0.5f);
    const auto* scale_bytes = reinterpret_cast<const std::byte*>(scales.data());
    const std::vector<std::byte> scale_pattern(scale_bytes, scale_bytes + scales.size() * 4);
    if (format == kInt8) absmax = Filled(shape.rows * 4, scale_pattern);
    if (format == kNf4) {
      absmax_codes = Filled(n / 64, RandomPattern());
      block_scale = Filled((n / 64 + 255) / 256 * 4, scale_pattern);
      dynamic_map = Filled(256 * 4, scale_pattern);
    }
    bytes = code_bytes + (format == kInt8 ? shape.rows * 4 : format == kNf4 ? n / 64 : 0);
    const size_t copies = std::clamp<size_t>(kRotateBytes / code_bytes + 1, 2, 256);
    for (size_t c = 0; c < copies; ++c) {
      codes.push_back(Filled(code_bytes, RandomPattern()));
      DeviceMatrixView view;
      view.format = format == kF16    ? DeviceMatrixView::Format::kF16
                    : format == kInt8 ? DeviceMatrixView::Format::kInt8
                                      : DeviceMatrixView::Format::kNf4;
      view.rows = shape.rows;
      view.cols = shape.cols;
      view.data = codes.back().get();
      view.absmax = reinterpret_cast<const float*>(absmax.get());
      view.absmax_codes = reinterpret_cast<const uint8_t*>(absmax_codes.get());
      view.absmax_block_scale = reinterpret_cast<const float*>(block_scale.get());
      view.dynamic_map = reinterpret_cast<const float*>(dynamic_map.get());
      views.push_back(view);
    }
  }
};

// y = x·Wᵀ + bias for n tokens: the fused kernels up to kGemvMaxTokens, cuBLASLt above
// (quantized: dequantize slices + cuBLASLt), as Gemm::Run chooses; optionally launched
// programmatically (Gemm::Run's last argument).
void BM_MatrixProduct(benchmark::State& state) {
  if (!TheDevice().unusable.empty()) return state.SkipWithError(TheDevice().unusable.c_str());
  const auto format = static_cast<Format>(state.range(0));
  const Shape& shape = kShapes[state.range(1)];
  const int n = static_cast<int>(state.range(2));
  const bool programmatic = state.range(3) != 0;
  if (programmatic && !ProgrammaticLaunchAvailable()) {
    return state.SkipWithError("programmatic dependent launch needs sm_90+ and compute_90 code");
  }
  state.SetLabel(std::string(kFormatNames[format]) + " " + shape.name + " " +
                 std::to_string(shape.rows) + "x" + std::to_string(shape.cols) +
                 (programmatic ? " programmatic" : ""));
  Weights weights(format, shape);
  DeviceArray<std::byte> x = Filled(static_cast<size_t>(n) * shape.cols * 2, RandomPattern());
  DeviceArray<std::byte> bias = Filled(shape.rows * 4, RandomPattern());
  DeviceArray<float> y =
      *DeviceArray<float>::Make(TheDevice().allocator, static_cast<size_t>(n) * shape.rows, "y");
  Gemm gemm;
  if (absl::Status s = gemm.Init(TheDevice().allocator,
                                 Gemm::ScratchElements(shape.rows * shape.cols, shape.cols));
      !s.ok()) {
    return state.SkipWithError(std::string(s.message()).c_str());
  }
  auto run = [&](int launch, cudaStream_t stream) {
    return gemm.Run(weights.views[launch % weights.views.size()],
                    reinterpret_cast<const float*>(bias.get()),
                    reinterpret_cast<const Half*>(x.get()), n, y.get(), stream, {},
                    programmatic);
  };
  // Once outside the graph: errors surface here, and cuBLASLt's plan is made.
  if (absl::Status s = run(0, TheDevice().stream); !s.ok()) {
    return state.SkipWithError(std::string(s.message()).c_str());
  }
  TimeGraph(state, [&](int launch, cudaStream_t stream) { (void)run(launch, stream); },
            static_cast<double>(weights.bytes));
}
void MatrixProductArgs(benchmark::internal::Benchmark* b) {
  for (int format : {kF16, kInt8, kNf4}) {
    for (int shape = 0; shape < 5; ++shape) {
      if (shape == 4 && format != kF16) continue;  // the LM head stays fp16
      for (int n : {1, 4, 8, 16, 64}) b->Args({format, shape, n, 0});
      // Back to back with programmatic dependent launch: each product's blocks start, and
      // prefetch their weights, while the previous one finishes.
      b->Args({format, shape, 1, 1});
    }
  }
}
BENCHMARK(BM_MatrixProduct)->Apply(MatrixProductArgs)->UseManualTime()->Unit(benchmark::kMicrosecond);

// One layer's attention (StoreKv + the attention kernel) for `batch` sessions of a streaming
// cache (4 sinks + 256 window, the ring wrapped) or a dense cache of 500 tokens; the layer
// rotates over all 32 layers' caches, as a step does.
void BM_Attention(benchmark::State& state) {
  if (!TheDevice().unusable.empty()) return state.SkipWithError(TheDevice().unusable.c_str());
  const int batch = static_cast<int>(state.range(0));
  const bool streaming = state.range(1) != 0;
  state.SetLabel(streaming ? "streaming 4+256" : "dense 500");
  const int capacity = streaming ? 4 + 256 + 64 : 512;
  const size_t cache_bytes = static_cast<size_t>(kLayers) * 2 * kHeads * capacity * kHeadDim * 2;
  std::vector<DeviceArray<std::byte>> caches;
  std::vector<AttentionRow> rows(batch);
  for (int b = 0; b < batch; ++b) {
    caches.push_back(Filled(cache_bytes, RandomPattern()));
    AttentionRow& row = rows[b];
    row.kv = reinterpret_cast<Half*>(caches.back().get());
    row.capacity = capacity;
    if (streaming) {
      // Position 1000: sinks 0..3 (ranks 0..3), window slots 100..323 then 4..35 (ranks 4..259).
      row.new_slot = 35;
      row.new_key_position = -1;
      row.num_spans = 3;
      row.total_keys = 4 + 224 + 32;
      row.spans[0] = {0, 4, 259, 0};
      row.spans[1] = {100, 224, 259, 4};
      row.spans[2] = {4, 32, 259, 228};
    } else {
      row.new_slot = 499;
      row.new_key_position = 499;
      row.num_spans = 1;
      row.total_keys = 500;
      row.spans[0] = {0, 500, 499, -1};
    }
  }
  DeviceAllocator& a = TheDevice().allocator;
  DeviceArray<AttentionRow> device_rows = *DeviceArray<AttentionRow>::Make(a, batch, "rows");
  cudaMemcpy(device_rows.get(), rows.data(), batch * sizeof(AttentionRow), cudaMemcpyHostToDevice);
  std::vector<float> table(static_cast<size_t>(2) * kRotary * 1024, 0.5f);
  DeviceArray<float> rotary = *DeviceArray<float>::Make(a, table.size(), "rotary");
  cudaMemcpy(rotary.get(), table.data(), table.size() * 4, cudaMemcpyHostToDevice);
  DeviceArray<std::byte> qkv = Filled(static_cast<size_t>(batch) * 3 * kHidden * 4, RandomPattern());
  // fp16 noise read as fp32 is still finite: fine for timing.
  int needed = (rows[0].total_keys + kAttentionKeysPerBlock - 1) / kAttentionKeysPerBlock;
  int max_blocks = 1;
  while (max_blocks < needed) max_blocks *= 2;
  DeviceArray<float> partials = *DeviceArray<float>::Make(
      a, static_cast<size_t>(batch) * kHeads * max_blocks * (kHeadDim + 2), "partials");
  DeviceArray<int> arrivals = *DeviceArray<int>::Make(a, static_cast<size_t>(batch) * kHeads, "arrivals");
  cudaMemset(arrivals.get(), 0, arrivals.bytes());
  cudaDeviceSynchronize();  // the benchmark's stream does not wait for the default stream
  DeviceArray<Half> out = *DeviceArray<Half>::Make(a, static_cast<size_t>(batch) * kHidden, "out");
  const double bytes = static_cast<double>(batch) * rows[0].total_keys * 2 * kHidden * 2;
  TimeGraph(state, [&](int launch, cudaStream_t stream) {
    const AttentionShape shape{kHeads, kHeadDim, kRotary, launch % kLayers};
    const auto* q = reinterpret_cast<const float*>(qkv.get());
    LaunchStoreKv(device_rows.get(), batch, shape, q, rotary.get(), stream);
    LaunchAttention(device_rows.get(), batch, max_blocks, shape, q, rotary.get(), partials.get(),
                    arrivals.get(), out.get(), stream);
  }, bytes);
}
BENCHMARK(BM_Attention)
    ->ArgsProduct({{1, 16, 64}, {1, 0}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The small kernels of a step: both LayerNorms of a layer, the argmax over the vocabulary.
void BM_LayerNorms(benchmark::State& state) {
  if (!TheDevice().unusable.empty()) return state.SkipWithError(TheDevice().unusable.c_str());
  const int n = static_cast<int>(state.range(0));
  DeviceAllocator& a = TheDevice().allocator;
  DeviceArray<std::byte> x = Filled(static_cast<size_t>(n) * kHidden * 4, RandomPattern());
  DeviceArray<std::byte> params = Filled(kHidden * 4, RandomPattern());
  DeviceArray<Half> first = *DeviceArray<Half>::Make(a, static_cast<size_t>(n) * kHidden, "out");
  DeviceArray<Half> second = *DeviceArray<Half>::Make(a, static_cast<size_t>(n) * kHidden, "out");
  const auto* p = reinterpret_cast<const float*>(params.get());
  TimeGraph(state, [&](int, cudaStream_t stream) {
    LaunchLayerNorms(reinterpret_cast<const float*>(x.get()), n, kHidden, 1e-5f,
                     {p, p, first.get()}, {p, p, second.get()}, stream);
  }, static_cast<double>(n) * kHidden * 4);
}
BENCHMARK(BM_LayerNorms)->Arg(1)->Arg(64)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_Argmax(benchmark::State& state) {
  if (!TheDevice().unusable.empty()) return state.SkipWithError(TheDevice().unusable.c_str());
  const int n = static_cast<int>(state.range(0));
  DeviceArray<std::byte> logits = Filled(static_cast<size_t>(n) * kVocab * 4, RandomPattern());
  DeviceArray<int32_t> next = *DeviceArray<int32_t>::Make(TheDevice().allocator, n, "next");
  TimeGraph(state, [&](int, cudaStream_t stream) {
    LaunchArgmax(reinterpret_cast<const float*>(logits.get()), n, kVocab, next.get(), stream);
  }, static_cast<double>(n) * kVocab * 4);
}
BENCHMARK(BM_Argmax)->Arg(1)->Arg(64)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sinkserve::cuda

BENCHMARK_MAIN();
