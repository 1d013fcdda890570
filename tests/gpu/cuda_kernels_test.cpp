// The CUDA kernels one by one against the CPU engine's ops (the reference), on fresh random
// inputs: matrix products in every weight format and row count (fused kernels and cuBLASLt),
// embedding gather, LayerNorm, GELU, and attention over dense and wrapped streaming spans.
// Skipped, with the reason, where no CUDA device is usable.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "engine/cpu/cpu_kernels.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/device_memory.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/kernels.h"
#include "common/base/half.h"
#include "engine/backend/kv_cache.h"
#include "engine/format/quant.h"
#include "common/base/thread_pool.h"

namespace sinkserve::cuda {
namespace {

double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// fp16 round trip: what a kernel reading fp16 inputs sees.
std::vector<float> RoundToHalf(std::vector<float> v) {
  for (float& x : v) x = F16ToFloat(FloatToF16(x));
  return v;
}

std::vector<Half> ToHalf(const std::vector<float>& v) {
  std::vector<Half> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = FloatToF16(v[i]);
  return h;
}

class CudaKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (absl::Status status = CudaAvailable(); !status.ok()) GTEST_SKIP() << status.message();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  template <typename T>
  DeviceArray<T> ToDevice(const std::vector<T>& host) {
    DeviceArray<T> array = *DeviceArray<T>::Make(allocator_, host.size(), "test");
    EXPECT_EQ(cudaMemcpy(array.get(), host.data(), host.size() * sizeof(T),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    return array;
  }
  template <typename T>
  std::vector<T> ToHost(const DeviceArray<T>& array) {
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<T> host(array.size());
    EXPECT_EQ(cudaMemcpy(host.data(), array.get(), array.bytes(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }
  // Output buffer poisoned with NaN, so an element no kernel wrote fails the comparison.
  DeviceArray<float> Poisoned(size_t n) {
    return ToDevice(std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()));
  }

  // The fused GELU and residual epilogues against the product stored, then the GELU and
  // residual kernels: bit for bit (the same arithmetic in the same order).
  void ExpectEpiloguesEqualSeparateKernels(Gemm& gemm, const DeviceMatrixView& w,
                                           const float* bias, const Half* x, int n) {
    const size_t size = static_cast<size_t>(n) * w.rows;
    DeviceArray<float> stored = Poisoned(size), scratch = Poisoned(size);
    ASSERT_TRUE(gemm.Run(w, bias, x, n, stored.get(), stream_).ok());
    for (bool tanh : {false, true}) {
      DeviceArray<Half> fused = ToDevice(std::vector<Half>(size, 0x7e00));
      DeviceArray<Half> separate = ToDevice(std::vector<Half>(size, 0x7e00));
      ASSERT_TRUE(
          gemm.Run(w, bias, x, n, scratch.get(), stream_, GemvEpilogue::Gelu(fused.get(), tanh))
              .ok());
      LaunchGelu(stored.get(), static_cast<int64_t>(size), tanh, separate.get(), stream_);
      EXPECT_EQ(ToHost(fused), ToHost(separate)) << "gelu, tanh " << tanh << ", n=" << n;
    }
    const std::vector<float> residual = Random(size, rng_), attn = Random(size, rng_);
    DeviceArray<float> device_attn = ToDevice(attn);
    for (bool parallel : {true, false}) {
      DeviceArray<float> fused = ToDevice(residual), separate = ToDevice(residual);
      ASSERT_TRUE(gemm.Run(w, bias, x, n, scratch.get(), stream_,
                           GemvEpilogue::Residual(fused.get(), device_attn.get(), parallel))
                      .ok());
      LaunchResidual(separate.get(), stored.get(), device_attn.get(), static_cast<int64_t>(size),
                     parallel, stream_);
      EXPECT_EQ(ToHost(fused), ToHost(separate)) << "residual, parallel " << parallel << ", n=" << n;
    }
  }

  DeviceAllocator allocator_;
  cudaStream_t stream_ = nullptr;
  std::mt19937 rng_{std::random_device{}()};
};

TEST_F(CudaKernelsTest, MatrixProductsInEveryFormatMatchTheCpu) {
  constexpr int64_t kRows = 200, kCols = 320;
  const std::vector<float> w = Random(kRows * kCols, rng_, 0.05f);
  const std::vector<float> bias = Random(kRows, rng_);
  const Int8Rows int8 = QuantizeInt8Rows(w, kRows, kCols);
  const Nf4Blocks nf4 = QuantizeNf4(w);
  Nf4Blocks nf4_dq_codes = nf4;
  const QuantizedAbsmax nf4_absmax = DoubleQuantize(nf4.block_absmax);
  nf4_dq_codes.block_absmax.clear();
  const std::vector<Half> w16 = ToHalf(w);

  struct Case {
    const char* name;
    Matrix cpu;  // the same weights as the CPU engine holds them
    DeviceMatrixView::Format format;
  };
  const Case cases[] = {
      {"fp16", Matrix{DType::kF16, kRows, kCols, reinterpret_cast<const std::byte*>(w16.data())},
       DeviceMatrixView::Format::kF16},
      {"int8", Matrix::Int8(int8), DeviceMatrixView::Format::kInt8},
      {"nf4", Matrix::Nf4(nf4, kRows, kCols), DeviceMatrixView::Format::kNf4},
      {"nf4 double-quant", Matrix::Nf4(nf4_dq_codes, kRows, kCols, &nf4_absmax),
       DeviceMatrixView::Format::kNf4},
  };
  DeviceArray<float> dynamic_map = ToDevice(std::vector<float>(kDynamicMap, kDynamicMap + 256));
  DeviceArray<float> device_bias = ToDevice(bias);
  // `sliced` dequantizes 64 rows at a time (its scratch holds 65): slices of 64, 64, 64, 8 rows.
  Gemm whole, sliced;
  ASSERT_TRUE(whole.Init(allocator_, kRows * kCols).ok());
  ASSERT_TRUE(sliced.Init(allocator_, 65 * kCols).ok());
  ThreadPool pool(2);
  for (const Case& c : cases) {
    DeviceMatrixView view;
    view.format = c.format;
    view.rows = kRows;
    view.cols = kCols;
    DeviceArray<std::byte> data;
    DeviceArray<float> absmax, block_scale;
    DeviceArray<uint8_t> codes;
    if (c.format == DeviceMatrixView::Format::kF16) {
      data = ToDevice(std::vector<std::byte>(c.cpu.data, c.cpu.data + kRows * kCols * 2));
    } else if (c.format == DeviceMatrixView::Format::kInt8) {
      const auto* q = reinterpret_cast<const std::byte*>(int8.codes.data());
      data = ToDevice(std::vector<std::byte>(q, q + int8.codes.size()));
      absmax = ToDevice(int8.row_absmax);
    } else {
      const auto* q = reinterpret_cast<const std::byte*>(nf4.codes.data());
      data = ToDevice(std::vector<std::byte>(q, q + nf4.codes.size()));
      if (c.cpu.nf4_absmax != nullptr) {
        codes = ToDevice(nf4_absmax.codes);
        block_scale = ToDevice(nf4_absmax.block_scale);
        view.absmax_offset = nf4_absmax.offset;
      } else {
        absmax = ToDevice(nf4.block_absmax);
      }
    }
    view.data = data.get();
    view.absmax = absmax.get();
    view.absmax_codes = codes.get();
    view.absmax_block_scale = block_scale.get();
    view.dynamic_map = dynamic_map.get();
    for (int n : {1, 2, 3, 5, 8, 9, 13, 40}) {  // every fused variant, then cuBLASLt
      const std::vector<float> x = RoundToHalf(Random(n * kCols, rng_));
      std::vector<float> want(n * kRows);
      cpu::MatMul(c.cpu, bias.data(), x.data(), n, want.data(), pool);
      DeviceArray<Half> device_x = ToDevice(ToHalf(x));
      for (Gemm* gemm : {&whole, &sliced}) {
        DeviceArray<float> y = Poisoned(n * kRows);
        ASSERT_TRUE(gemm->Run(view, device_bias.get(), device_x.get(), n, y.get(), stream_).ok());
        // cuBLASLt rounds the dequantized weights to fp16 (the fused kernels do not).
        const double tolerance =
            n <= kGemvMaxTokens || c.format == DeviceMatrixView::Format::kF16 ? 1e-5 : 2e-3;
        EXPECT_LT(RelativeError(ToHost(y), want), tolerance)
            << c.name << " n=" << n << (gemm == &sliced ? " (sliced)" : "");
        // Programmatic dependent launch changes when blocks start, not what they compute.
        DeviceArray<float> programmatic = Poisoned(n * kRows);
        ASSERT_TRUE(gemm->Run(view, device_bias.get(), device_x.get(), n, programmatic.get(),
                              stream_, {}, /*programmatic=*/true)
                        .ok());
        EXPECT_EQ(ToHost(programmatic), ToHost(y)) << c.name << " n=" << n << " programmatic";
      }
      ExpectEpiloguesEqualSeparateKernels(whole, view, device_bias.get(), device_x.get(), n);
    }
  }
}

// A programmatically launched product waits for the kernel before it: a LayerNorm of 65,536
// rows writes the product's input last (its final rows), and the product's blocks may start
// as soon as every LayerNorm block has, so without the wait it would read the poison (NaN)
// left in those rows.
TEST_F(CudaKernelsTest, ProgrammaticProductWaitsForTheKernelBeforeIt) {
  if (!ProgrammaticLaunchAvailable()) {
    GTEST_SKIP() << "programmatic dependent launch needs an sm_90+ GPU and compute_90 code";
  }
  constexpr int kRows = 512, kCols = 256, kNormRows = 1 << 16;
  const std::vector<Half> w = ToHalf(Random(kRows * kCols, rng_, 0.05f));
  DeviceArray<Half> device_w = ToDevice(w);
  DeviceMatrixView view;
  view.rows = kRows;
  view.cols = kCols;
  view.data = device_w.get();
  DeviceArray<float> x = ToDevice(Random(static_cast<size_t>(kNormRows) * kCols, rng_));
  DeviceArray<float> norm_weight = ToDevice(Random(kCols, rng_)), norm_bias = ToDevice(Random(kCols, rng_));
  DeviceArray<Half> normed = ToDevice(std::vector<Half>(static_cast<size_t>(kNormRows) * kCols));
  Gemm gemm;
  ASSERT_TRUE(gemm.Init(allocator_, 0).ok());
  for (int n : {1, 8}) {
    const Half* last_rows = normed.get() + static_cast<size_t>(kNormRows - n) * kCols;
    auto normalize = [&] {
      ASSERT_EQ(cudaMemsetAsync(normed.get(), 0xff, normed.bytes(), stream_), cudaSuccess);  // NaN
      LaunchLayerNorm(x.get(), kNormRows, kCols, 1e-5f,
                      {norm_weight.get(), norm_bias.get(), normed.get()}, stream_);
    };
    normalize();
    DeviceArray<float> want = Poisoned(n * kRows);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    ASSERT_TRUE(gemm.Run(view, nullptr, last_rows, n, want.get(), stream_).ok());
    const std::vector<float> expected = ToHost(want);
    for (int trial = 0; trial < 10; ++trial) {
      // Poisoned first: its synchronous copy would wait for the LayerNorm.
      DeviceArray<float> y = Poisoned(n * kRows);
      normalize();
      ASSERT_TRUE(gemm.Run(view, nullptr, last_rows, n, y.get(), stream_, {}, true).ok());
      ASSERT_EQ(ToHost(y), expected) << "n=" << n << ", trial " << trial;
    }
  }
}

TEST_F(CudaKernelsTest, EmbeddingLayerNormAndGeluMatchTheCpu) {
  constexpr int kRows = 7, kDim = 320, kVocab = 50;
  // Embedding gather from an fp16 table.
  const std::vector<float> table = RoundToHalf(Random(kVocab * kDim, rng_));
  const std::vector<Half> table16 = ToHalf(table);
  DeviceArray<Half> device_table = ToDevice(table16);
  DeviceMatrixView view;
  view.rows = kVocab;
  view.cols = kDim;
  view.data = device_table.get();
  std::vector<int32_t> tokens(kRows);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng_() % kVocab);
  DeviceArray<int32_t> device_tokens = ToDevice(tokens);
  DeviceArray<float> embedded = Poisoned(kRows * kDim);
  LaunchEmbedding(view, device_tokens.get(), kRows, embedded.get(), stream_);
  std::vector<float> want(kRows * kDim);
  for (int t = 0; t < kRows; ++t) {
    std::copy_n(&table[tokens[t] * kDim], kDim, &want[t * kDim]);
  }
  EXPECT_EQ(ToHost(embedded), want);

  // LayerNorm (fp16 output) against the CPU's: one output, and two outputs of one pass with
  // their own weights (a parallel-residual layer's two norms).
  const std::vector<float> x = Random(kRows * kDim, rng_, 3.0f);
  const std::vector<float> weight = Random(kDim, rng_), bias = Random(kDim, rng_);
  const std::vector<float> weight2 = Random(kDim, rng_), bias2 = Random(kDim, rng_);
  DeviceArray<float> device_x = ToDevice(x), device_w = ToDevice(weight),
                     device_b = ToDevice(bias), device_w2 = ToDevice(weight2),
                     device_b2 = ToDevice(bias2);
  auto normalized = [&](const std::vector<float>& w, const std::vector<float>& b) {
    std::vector<float> out(kRows * kDim);
    for (int t = 0; t < kRows; ++t) {
      cpu::LayerNorm(&x[t * kDim], w.data(), b.data(), kDim, 1e-5f, &out[t * kDim]);
    }
    return out;
  };
  auto to_float = [&](const DeviceArray<Half>& device) {
    std::vector<float> out;
    for (Half h : ToHost(device)) out.push_back(F16ToFloat(h));
    return out;
  };
  const Half kNaN = 0x7e00;
  DeviceArray<Half> single = ToDevice(std::vector<Half>(kRows * kDim, kNaN));
  LaunchLayerNorm(device_x.get(), kRows, kDim, 1e-5f, {device_w.get(), device_b.get(), single.get()},
                  stream_);
  EXPECT_LT(RelativeError(to_float(single), normalized(weight, bias)), 1e-3);
  DeviceArray<Half> first = ToDevice(std::vector<Half>(kRows * kDim, kNaN));
  DeviceArray<Half> second = ToDevice(std::vector<Half>(kRows * kDim, kNaN));
  LaunchLayerNorms(device_x.get(), kRows, kDim, 1e-5f,
                   {device_w.get(), device_b.get(), first.get()},
                   {device_w2.get(), device_b2.get(), second.get()}, stream_);
  EXPECT_EQ(ToHost(first), ToHost(single));
  EXPECT_LT(RelativeError(to_float(second), normalized(weight2, bias2)), 1e-3);
  std::vector<float> got;

  // GELU, both forms.
  for (Activation activation : {Activation::kActivationGeluErf, Activation::kActivationGeluTanh}) {
    DeviceArray<Half> out = ToDevice(std::vector<Half>(x.size(), 0x7e00));
    LaunchGelu(device_x.get(), static_cast<int64_t>(x.size()),
               activation == Activation::kActivationGeluTanh, out.get(), stream_);
    std::vector<float> expected = x;
    cpu::Gelu(activation, expected.data(), static_cast<int64_t>(expected.size()));
    got.clear();
    for (Half h : ToHost(out)) got.push_back(F16ToFloat(h));
    EXPECT_LT(RelativeError(got, expected), 1e-3);
  }
}

// Greedy argmax per row against std::max_element: a real vocabulary width (not a multiple of
// the block), ties (the lowest index wins), the maximum in the last element, and −inf.
TEST_F(CudaKernelsTest, ArgmaxMatchesMaxElementWithTies) {
  constexpr int kRows = 9, kVocab = 50304;
  std::vector<float> logits = Random(kRows * kVocab, rng_);
  auto row = [&](int r) { return &logits[static_cast<size_t>(r) * kVocab]; };
  std::uniform_int_distribution<int> column(0, kVocab - 1);
  const int a = column(rng_), b = column(rng_);
  row(1)[std::max(a, b)] = row(1)[std::min(a, b)] = 100.0f;  // a tie
  row(2)[kVocab - 1] = 100.0f;                                 // the last element
  std::fill(row(3), row(3) + kVocab, 1.5f);                    // all equal: 0
  std::fill(row(4), row(4) + kVocab, -INFINITY);               // all −inf: 0
  row(5)[0] = 100.0f;                                          // the first element
  for (int c = 0; c < kVocab; c += 7) row(6)[c] = 50.0f;       // many ties: the first
  DeviceArray<float> device_logits = ToDevice(logits);
  DeviceArray<int32_t> next = ToDevice(std::vector<int32_t>(kRows, -1));
  LaunchArgmax(device_logits.get(), kRows, kVocab, next.get(), stream_);
  const std::vector<int32_t> got = ToHost(next);
  for (int r = 0; r < kRows; ++r) {
    EXPECT_EQ(got[r], std::max_element(row(r), row(r) + kVocab) - row(r)) << "row " << r;
  }
}

// Attention of one head over spans against a direct fp64 computation (the CPU backend's
// arithmetic, written out): keys of spans with key_rank_begin ≥ 0 rotated at their rank. For
// the head sizes of the Pythia family (64: 70m–410m, 80: 2.8b, 128: 1b–12b) and the largest
// the kernel takes (256), launched twice so the second launch checks that the first left the
// block counters ready.
TEST_F(CudaKernelsTest, AttentionOverDenseAndWrappedStreamingSpansMatchesTheReference) {
  for (const int kDim : {64, 80, 128, 256}) {
    SCOPED_TRACE(testing::Message() << "head_dim " << kDim);
    constexpr int kHeads = 3, kRot = 20, kCapacity = 300;
    const cpu::RotaryTable rotary(kRot, 10000.0);
    std::vector<float> table(2 * kRot * 1024);
    for (int p = 0; p < 1024; ++p) {
      rotary.Compute(p, &table[p * 2 * kRot], &table[p * 2 * kRot + kRot]);
    }
    DeviceArray<float> device_table = ToDevice(table);
    // One layer's cache with random (fp16) keys and values.
    const std::vector<float> kv = RoundToHalf(Random(2 * kHeads * kCapacity * kDim, rng_));
    DeviceArray<Half> device_kv = ToDevice(ToHalf(kv));

    // Rows: a dense query over 261 keys (5 key blocks), a streaming one whose window wraps the
    // ring (2 blocks), one with only sinks (1 block, no combining), one of 4 spans (the most),
    // and a dense one of exactly one full block of 64 keys.
    std::vector<AttentionRow> rows(5);
    rows[0] = {device_kv.get(), kCapacity, 260, 260, 1, 261, {{0, 261, 260, -1}}};
    rows[1] = {device_kv.get(), kCapacity, 10, -1, 3, 4 + 100 + 11,
               {{0, 4, 114, 0}, {200, 100, 114, 4}, {4, 11, 114, 104}}};
    rows[2] = {device_kv.get(), kCapacity, 2, -1, 1, 3, {{0, 3, 2, 0}}};
    rows[3] = {device_kv.get(), kCapacity, 150, -1, 4, 4 + 30 + 20 + 20,
               {{0, 4, 300, 0}, {40, 30, 300, 4}, {140, 20, 300, 34}, {200, 20, 300, 54}}};
    rows[4] = {device_kv.get(), kCapacity, 63, 63, 1, 64, {{0, 64, 63, -1}}};
    const int n = static_cast<int>(rows.size());
    const std::vector<float> qkv = Random(n * kHeads * 3 * kDim, rng_);
    DeviceArray<AttentionRow> device_rows = ToDevice(rows);
    DeviceArray<float> device_qkv = ToDevice(qkv);
    const AttentionShape shape{kHeads, kDim, kRot, 0};
    const int max_blocks = 8;  // rounded up past the 5 needed, as the backend does for graphs
    DeviceArray<float> partials = Poisoned(n * kHeads * max_blocks * (kDim + 2));
    DeviceArray<int> arrivals = ToDevice(std::vector<int>(n * kHeads, 0));
    LaunchStoreKv(device_rows.get(), n, shape, device_qkv.get(), device_table.get(), stream_);
    std::vector<std::vector<float>> launches;
    for (int launch = 0; launch < 2; ++launch) {
      DeviceArray<Half> out = ToDevice(std::vector<Half>(n * kHeads * kDim, 0x7e00));  // NaN
      LaunchAttention(device_rows.get(), n, max_blocks, shape, device_qkv.get(),
                      device_table.get(), partials.get(), arrivals.get(), out.get(), stream_);
      std::vector<float> got;
      for (Half h : ToHost(out)) got.push_back(F16ToFloat(h));
      launches.push_back(got);
    }
    EXPECT_EQ(ToHost(arrivals), std::vector<int>(n * kHeads, 0));

    // The reference reads the cache as the kernels left it (StoreKv wrote the new keys).
    std::vector<float> cache;
    for (Half h : ToHost(device_kv)) cache.push_back(F16ToFloat(h));
    std::vector<float> want(n * kHeads * kDim);
    auto rotate = [&](const float* v, int position, float* out_v) {
      std::copy_n(v, kDim, out_v);
      cpu::ApplyRotary(out_v, kRot, &table[position * 2 * kRot], &table[position * 2 * kRot + kRot]);
    };
    for (int r = 0; r < n; ++r) {
      for (int h = 0; h < kHeads; ++h) {
        const float* q = &qkv[(r * kHeads + h) * 3 * kDim];
        std::vector<double> scores;
        std::vector<int> slots;
        for (int s = 0; s < rows[r].num_spans; ++s) {
          const AttentionSpan& span = rows[r].spans[s];
          std::vector<float> query(kDim), key(kDim);
          rotate(q, span.query_position, query.data());
          for (int j = 0; j < span.num_slots; ++j) {
            const int slot = span.begin_slot + j;
            const float* k = &cache[(h * kCapacity + slot) * kDim];
            if (span.key_rank_begin >= 0) {
              rotate(k, span.key_rank_begin + j, key.data());
            } else {
              std::copy_n(k, kDim, key.data());
            }
            double dot = 0;
            for (int i = 0; i < kDim; ++i) dot += double(query[i]) * key[i];
            scores.push_back(dot / std::sqrt(double(kDim)));
            slots.push_back(slot);
          }
        }
        const double max_score = *std::max_element(scores.begin(), scores.end());
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - max_score));
        for (int i = 0; i < kDim; ++i) {
          double acc = 0;
          for (size_t j = 0; j < scores.size(); ++j) {
            acc += scores[j] / sum * cache[((kHeads + h) * kCapacity + slots[j]) * kDim + i];
          }
          want[(r * kHeads + h) * kDim + i] = static_cast<float>(acc);
        }
      }
    }
    EXPECT_LT(RelativeError(launches[0], want), 2e-3);
    EXPECT_EQ(launches[1], launches[0]);
  }
}

}  // namespace
}  // namespace sinkserve::cuda
