#include "engine/cpu/cpu_kernels.h"

#include "engine/cpu/cpu_kernels_isa.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "common/base/half.h"
#include "tests/unit/cpu_isa_params.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

using testing::RandomFloats;
using testing::TestSeed;

// Stores fp32 values in `dtype` (rounded to nearest even) and returns the bytes.
std::vector<std::byte> Store(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&bytes[4 * i], &values[i], 4);
    } else {
      const uint16_t bits = dtype == DType::kF16 ? FloatToF16(values[i]) : FloatToBf16(values[i]);
      std::memcpy(&bytes[2 * i], &bits, 2);
    }
  }
  return bytes;
}

TEST(HalfTest, F16RoundTripsEveryValue) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float value = F16ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(value)) continue;
    ASSERT_EQ(FloatToF16(value), bits) << bits;
    // F16C is the hardware reference for the conversion.
    ASSERT_EQ(std::bit_cast<uint32_t>(value),
              std::bit_cast<uint32_t>(_cvtsh_ss(static_cast<unsigned short>(bits))));
  }
}

// F16C's rounding of one float (clang's _cvtss_sh macro is a C compound literal, which C++ with
// -Wpedantic refuses).
uint16_t HardwareF16(float value) {
  return static_cast<uint16_t>(
      _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(value), _MM_FROUND_TO_NEAREST_INT), 0));
}

TEST(HalfTest, FloatToF16MatchesHardwareRounding) {
  std::mt19937_64 rng(TestSeed());
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 1000000; ++i) {
    const float value = std::bit_cast<float>(any_bits(rng));
    if (std::isnan(value)) continue;
    ASSERT_EQ(FloatToF16(value), HardwareF16(value)) << value;
  }
}

TEST(HalfTest, Bf16) {
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(FloatToBf16(1.0f + 0x1.0p-8f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + 0x1.8p-7f), 0x3f82);
}

TEST(CpuIsaTest, ParsesFlagsAndResolvesAuto) {
  for (cpu::CpuIsa isa : {cpu::CpuIsa::kAuto, cpu::CpuIsa::kAvx512, cpu::CpuIsa::kAvx2,
                          cpu::CpuIsa::kPortable}) {
    EXPECT_EQ(cpu::ParseCpuIsa(testing::CpuIsaFlag(isa)), isa);
  }
  EXPECT_EQ(cpu::ParseCpuIsa("avx-512"), std::nullopt);
  EXPECT_EQ(cpu::ParseCpuIsa(""), std::nullopt);
  const cpu::CpuIsa best = cpu::ResolveCpuIsa(cpu::CpuIsa::kAuto);
  EXPECT_NE(best, cpu::CpuIsa::kAuto);
  EXPECT_TRUE(cpu::CpuSupports(best));
  EXPECT_STREQ(cpu::CpuIsaName(cpu::CpuIsa::kAuto), cpu::CpuIsaName(best));
  // The best set: AVX-512 wherever this CPU has it, else AVX2 wherever it has that.
  if (cpu::CpuSupports(cpu::CpuIsa::kAvx512)) {
    EXPECT_EQ(best, cpu::CpuIsa::kAvx512);
  }
  if (!cpu::CpuSupports(cpu::CpuIsa::kAvx512) && cpu::CpuSupports(cpu::CpuIsa::kAvx2)) {
    EXPECT_EQ(best, cpu::CpuIsa::kAvx2);
  }
  // The AVX-512 kernels use AVX2 instructions too (the attention loops).
  if (cpu::CpuSupports(cpu::CpuIsa::kAvx512)) {
    EXPECT_TRUE(cpu::CpuSupports(cpu::CpuIsa::kAvx2));
  }
  EXPECT_STREQ(cpu::CpuIsaName(cpu::CpuIsa::kAvx512), "avx512f+bw+vl+dq");
}

class MatMulTest : public ::testing::TestWithParam<cpu::CpuIsa> {
 protected:
  void SetUp() override { SKIP_UNLESS_CPU_SUPPORTS(GetParam()); }
};

// Each kernel set's MatMul against the portable one and against double-precision sums, for
// every stored dtype and awkward shapes (rows not a multiple of the tile, cols not of the
// vector, more tokens than a token block).
TEST_P(MatMulTest, MatchesDoublePrecisionReference) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  const int shapes[][3] = {{1, 8, 1}, {5, 13, 2}, {67, 130, 3}, {256, 512, 1}, {97, 1000, 5},
                           {4, 7, 8}, {19, 48, 39}};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const auto& shape : shapes) {
      const int rows = shape[0], cols = shape[1], tokens = shape[2];
      std::vector<float> weights = RandomFloats(rng, static_cast<size_t>(rows) * cols);
      const std::vector<std::byte> stored = Store(weights, dtype);
      const Matrix w{dtype, rows, cols, stored.data()};
      const std::vector<float> x = RandomFloats(rng, static_cast<size_t>(tokens) * cols);
      const std::vector<float> bias = RandomFloats(rng, rows);
      std::vector<float> fast(static_cast<size_t>(tokens) * rows), slow(fast.size());
      cpu::MatMul(w, bias.data(), x.data(), tokens, fast.data(), pool, GetParam());
      cpu::MatMulReference(w, bias.data(), x.data(), tokens, slow.data());
      for (int t = 0; t < tokens; ++t) {
        for (int r = 0; r < rows; ++r) {
          double exact = bias[r], magnitude = std::abs(bias[r]);
          for (int k = 0; k < cols; ++k) {
            float wk;
            if (dtype == DType::kF32) {
              wk = weights[static_cast<size_t>(r) * cols + k];
            } else {
              uint16_t bits;
              std::memcpy(&bits, &stored[2 * (static_cast<size_t>(r) * cols + k)], 2);
              wk = dtype == DType::kF16 ? F16ToFloat(bits) : Bf16ToFloat(bits);
            }
            exact += static_cast<double>(wk) * x[static_cast<size_t>(t) * cols + k];
            magnitude += std::abs(static_cast<double>(wk) * x[static_cast<size_t>(t) * cols + k]);
          }
          // fp32 summation error bound: ~cols · 2^-24 · Σ|terms|.
          const double bound = (cols + 2) * 0x1.0p-24 * magnitude + 1e-30;
          const size_t at = static_cast<size_t>(t) * rows + r;
          ASSERT_NEAR(fast[at], exact, bound) << DTypeName(dtype) << " " << rows << "x" << cols;
          ASSERT_NEAR(slow[at], exact, bound) << DTypeName(dtype) << " " << rows << "x" << cols;
        }
      }
    }
  }
}

// A batch of tokens gives each token exactly what it gets alone, in every dtype: the tile a
// (row, token) lands in never changes its arithmetic.
TEST_P(MatMulTest, BatchedTokensEqualSingleTokensBitForBit) {
  std::mt19937_64 rng(TestSeed());
  ThreadPool pool(2);
  const int rows = 75, cols = 200, tokens = 41;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const std::vector<std::byte> stored =
        Store(RandomFloats(rng, static_cast<size_t>(rows) * cols), dtype);
    const Matrix w{dtype, rows, cols, stored.data()};
    const std::vector<float> x = RandomFloats(rng, static_cast<size_t>(tokens) * cols);
    std::vector<float> batched(static_cast<size_t>(tokens) * rows), single(batched.size());
    cpu::MatMul(w, nullptr, x.data(), tokens, batched.data(), pool, GetParam());
    for (int t = 0; t < tokens; ++t) {
      cpu::MatMul(w, nullptr, &x[static_cast<size_t>(t) * cols], 1, &single[static_cast<size_t>(t) * rows],
                  pool, GetParam());
    }
    ASSERT_EQ(std::memcmp(batched.data(), single.data(), batched.size() * sizeof(float)), 0)
        << DTypeName(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(CpuIsas, MatMulTest, testing::kCpuIsas, testing::CpuIsaTestName);

class AttentionLoopsTest : public ::testing::TestWithParam<cpu::CpuIsa> {
 protected:
  void SetUp() override { SKIP_UNLESS_CPU_SUPPORTS(GetParam()); }
};

TEST_P(AttentionLoopsTest, MatchPortable) {
  std::mt19937_64 rng(TestSeed());
  for (int d : {64, 80, 13}) {
    for (int n : {1, 7, 300}) {
      const std::vector<float> q = RandomFloats(rng, d), keys = RandomFloats(rng, n * d),
                               p = RandomFloats(rng, n);
      std::vector<float> fast(n), slow(n);
      cpu::AttentionScores(q.data(), keys.data(), n, d, 0.125f, fast.data(), GetParam());
      cpu::AttentionScoresPortable(q.data(), keys.data(), n, d, 0.125f, slow.data());
      for (int j = 0; j < n; ++j) ASSERT_NEAR(fast[j], slow[j], 1e-5f * (1 + std::abs(slow[j])));
      std::vector<float> out_fast = RandomFloats(rng, d), out_slow = out_fast;
      cpu::WeightedSum(p.data(), keys.data(), n, d, out_fast.data(), GetParam());
      cpu::WeightedSumPortable(p.data(), keys.data(), n, d, out_slow.data());
      for (int k = 0; k < d; ++k) {
        ASSERT_NEAR(out_fast[k], out_slow[k], 1e-4f * (1 + std::abs(out_slow[k])));
      }
    }
  }
}

// Fused rotate-and-dot against rotating a copy of each key and taking a plain dot product.
TEST_P(AttentionLoopsTest, RotatedKeyScoresMatchRotatingACopy) {
  std::mt19937_64 rng(TestSeed());
  for (const auto& [d, rot] : {std::pair{64, 16}, {80, 20}, {64, 64}, {80, 40}, {32, 2}}) {
    const int n = 37;
    cpu::RotaryTable rotary(rot, 10000.0);
    std::vector<float> table(static_cast<size_t>(n) * 2 * rot);
    for (int j = 0; j < n; ++j) rotary.Compute(100 + j, &table[j * 2 * rot], &table[j * 2 * rot + rot]);
    const std::vector<float> q = RandomFloats(rng, d), keys = RandomFloats(rng, n * d);
    std::vector<float> fast(n), portable(n), expected(n);
    cpu::RotatedKeyScores(q.data(), keys.data(), n, d, rot, table.data(), 0.125f, fast.data(),
                          GetParam());
    cpu::RotatedKeyScoresPortable(q.data(), keys.data(), n, d, rot, table.data(), 0.125f,
                                  portable.data());
    for (int j = 0; j < n; ++j) {
      std::vector<float> key(keys.begin() + j * d, keys.begin() + (j + 1) * d);
      cpu::ApplyRotary(key.data(), rot, &table[j * 2 * rot], &table[j * 2 * rot + rot]);
      double dot = 0;
      for (int k = 0; k < d; ++k) dot += static_cast<double>(q[k]) * key[k];
      expected[j] = static_cast<float>(dot * 0.125);
      ASSERT_NEAR(fast[j], expected[j], 1e-5f * (1 + std::abs(expected[j]))) << d << "/" << rot;
      ASSERT_NEAR(portable[j], expected[j], 1e-5f * (1 + std::abs(expected[j]))) << d << "/" << rot;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CpuIsas, AttentionLoopsTest, testing::kCpuIsas, testing::CpuIsaTestName);

TEST(LayerNormTest, MatchesDefinition) {
  std::mt19937_64 rng(TestSeed());
  const int dim = 300;
  std::vector<float> x = RandomFloats(rng, dim, 3.0f), w = RandomFloats(rng, dim),
                     b = RandomFloats(rng, dim), out(dim);
  for (float& v : x) v += 5.0f;  // a large mean: the centred variance must not cancel badly
  cpu::LayerNorm(x.data(), w.data(), b.data(), dim, 1e-5f, out.data());
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= dim;
  for (float v : x) var += (v - mean) * (v - mean);
  var /= dim;
  for (int i = 0; i < dim; ++i) {
    const double expected = (x[i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i];
    EXPECT_NEAR(out[i], expected, 1e-5 * (1 + std::abs(expected)));
  }
}

TEST(GeluTest, ErfAndTanhForms) {
  std::vector<float> x = {-3.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 3.0f};
  std::vector<float> erf_form = x, tanh_form = x;
  cpu::Gelu(Activation::kActivationGeluErf, erf_form.data(), erf_form.size());
  cpu::Gelu(Activation::kActivationGeluTanh, tanh_form.data(), tanh_form.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    EXPECT_NEAR(erf_form[i], 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))), 1e-6);
    EXPECT_NEAR(tanh_form[i],
                0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))), 1e-6);
  }
  // The two forms differ (by up to ~1e-3): the activation switch matters.
  EXPECT_NE(erf_form[1], tanh_form[1]);
}

// Rotating by position p then taking a dot product with a key rotated by position j depends
// only on p − j: the property the streaming cache's positions rely on.
TEST(RotaryTest, RelativePositionProperty) {
  std::mt19937_64 rng(TestSeed());
  const int ndims = 32;
  cpu::RotaryTable table(ndims, 10000.0);
  std::vector<float> cos(ndims), sin(ndims);
  const std::vector<float> q = RandomFloats(rng, ndims), k = RandomFloats(rng, ndims);
  auto score = [&](int64_t query_position, int64_t key_position) {
    std::vector<float> qr = q, kr = k;
    table.Compute(query_position, cos.data(), sin.data());
    cpu::ApplyRotary(qr.data(), ndims, cos.data(), sin.data());
    table.Compute(key_position, cos.data(), sin.data());
    cpu::ApplyRotary(kr.data(), ndims, cos.data(), sin.data());
    double dot = 0;
    for (int i = 0; i < ndims; ++i) dot += qr[i] * kr[i];
    return dot;
  };
  EXPECT_NEAR(score(10, 3), score(107, 100), 1e-4);
  EXPECT_NEAR(score(5, 5), score(0, 0), 1e-5);
  // Position 0 is the identity.
  std::vector<float> rotated = q;
  table.Compute(0, cos.data(), sin.data());
  cpu::ApplyRotary(rotated.data(), ndims, cos.data(), sin.data());
  EXPECT_EQ(rotated, q);
}

TEST(ThreadPoolTest, EveryIndexOnceAcrossManyRegions) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(1000);
  for (int region = 0; region < 2000; ++region) {
    pool.ParallelFor(1000, 7, [&](int64_t begin, int64_t end, int thread_index) {
      ASSERT_LT(thread_index, 3);
      for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
    });
  }
  for (const std::atomic<int>& count : hits) ASSERT_EQ(count.load(), 2000);
}

// Pools destroyed before their threads even start, or right after one loop, must not hang
// (a worker that starts late once missed the stop signal).
TEST(ThreadPoolTest, CreateAndDestroyQuickly) {
  for (int i = 0; i < 500; ++i) {
    ThreadPool idle(2);
  }
  for (int i = 0; i < 500; ++i) {
    ThreadPool pool(3);
    std::atomic<int> sum{0};
    pool.ParallelFor(10, 1, [&](int64_t begin, int64_t end, int) { sum += static_cast<int>(end - begin); });
    ASSERT_EQ(sum.load(), 10);
  }
}

}  // namespace
}  // namespace sinkserve
