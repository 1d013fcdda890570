// --cpu-activations int8 (engine/cpu/int8_activations.h): the activation quantizer against the
// definition, and every kernel set's integer products against a scalar reference of the same
// quantized arithmetic written here (own quantization with std::nearbyint, int64 block sums,
// double accumulation) — exactly where every fp32 operation is exact, within fp32 rounding of
// the scaling elsewhere. Fresh random inputs each run.
#include "engine/cpu/int8_activations.h"

#include <gtest/gtest.h>

#include <cfenv>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "engine/cpu/cpu_kernels.h"
#include "engine/format/quant.h"
#include "tests/unit/cpu_isa_params.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

using cpu::kActivationBlock;
using testing::RandomFloats;
using testing::TestSeed;

// The definition: per block of 64, d = amax/127, q = round_half_even(x · (127/amax)).
struct Reference {
  std::vector<int> codes;     // natural order
  std::vector<float> scales;  // per block
};

Reference QuantizeByDefinition(const std::vector<float>& x) {
  EXPECT_EQ(std::fegetround(), FE_TONEAREST);
  Reference r;
  for (size_t begin = 0; begin < x.size(); begin += kActivationBlock) {
    float amax = 0.0f;
    for (int k = 0; k < kActivationBlock; ++k) amax = std::max(amax, std::fabs(x[begin + k]));
    // 127/amax overflowing (amax below 127/FLT_MAX): the block counts as zeros.
    const bool zeros = amax < 127.0f / std::numeric_limits<float>::max();
    r.scales.push_back(zeros ? 0.0f : amax / 127.0f);
    const float inverse = zeros ? 0.0f : 127.0f / amax;
    for (int k = 0; k < kActivationBlock; ++k) {
      r.codes.push_back(static_cast<int>(std::nearbyint(x[begin + k] * inverse)));
    }
  }
  return r;
}

TEST(Int8ActivationsTest, ParsesTheFlag) {
  EXPECT_EQ(cpu::ParseActivations("fp32"), cpu::Activations::kFp32);
  EXPECT_EQ(cpu::ParseActivations("int8"), cpu::Activations::kInt8);
  EXPECT_EQ(cpu::ParseActivations("q8"), std::nullopt);
}

TEST(Int8ActivationsTest, Nf4TableIsTheRoundedLevels) {
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(cpu::kNf4Int8Values[c], std::lround(static_cast<double>(kNf4Values[c]) * 127)) << c;
  }
}

TEST(Int8ActivationsTest, QuantizerMatchesTheDefinition) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const int tokens = 3, cols = 4 * kActivationBlock;
  std::vector<float> x = RandomFloats(rng, static_cast<size_t>(tokens) * cols, 3.0f);
  // Block 1: ties (amax 127, so x · 127/amax = x): half-integers round to even.
  for (int k = 0; k < kActivationBlock; ++k) x[kActivationBlock + k] = (k - 32) + 0.5f;
  x[kActivationBlock] = 127.0f;
  // Block 2: zeros.
  std::fill(&x[2 * kActivationBlock], &x[3 * kActivationBlock], 0.0f);
  // Block 3 of token 1: so tiny that 127/amax overflows (zeros); token 2's: small but normal.
  for (int k = 0; k < kActivationBlock; ++k) x[cols + 3 * kActivationBlock + k] *= 1e-39f;
  for (int k = 0; k < kActivationBlock; ++k) x[2 * cols + 3 * kActivationBlock + k] *= 1e-35f;
  const Reference ref = QuantizeByDefinition(x);
  for (cpu::BlockOrder order : {cpu::BlockOrder::kNatural, cpu::BlockOrder::kEvenOdd}) {
    cpu::QuantizedActivations q;
    cpu::QuantizeActivations(x.data(), cols, tokens, order, q);
    ASSERT_EQ(q.codes.size(), x.size());
    for (size_t block = 0; block < ref.scales.size(); ++block) {
      ASSERT_EQ(std::bit_cast<uint32_t>(q.scales[block]),
                std::bit_cast<uint32_t>(ref.scales[block]))
          << block;
      for (int k = 0; k < kActivationBlock; ++k) {
        const int from = order == cpu::BlockOrder::kNatural ? k : k < 32 ? 2 * k : 2 * (k - 32) + 1;
        const int expected = ref.codes[block * kActivationBlock + from];
        ASSERT_EQ(q.codes[block * kActivationBlock + k], expected) << block << " " << k;
      }
      for (int j = 0; j < kActivationBlock / 4; ++j) {
        const int8_t* c = &q.codes[block * kActivationBlock + 4 * j];
        ASSERT_EQ(q.offset_sums[block * kActivationBlock / 4 + j],
                  -128 * (c[0] + c[1] + c[2] + c[3]))
            << block << " " << j;
      }
    }
  }
  // Ties to even: −30.5 → −30, −29.5 → −30.
  EXPECT_EQ(ref.codes[kActivationBlock + 1], -30);
  EXPECT_EQ(ref.codes[kActivationBlock + 2], -30);
}

// A weight matrix in one of the two formats, with what the reference needs to read it.
struct Weights {
  bool nf4 = false;
  Int8Rows int8;
  Nf4Blocks nf4_blocks;
  std::unique_ptr<QuantizedAbsmax> double_quant;
  Matrix matrix;

  int Code(int64_t row, int64_t k) const {  // the integer weight
    return nf4 ? cpu::kNf4Int8Values[Nf4CodeAt(nf4_blocks.codes.data(), row * matrix.cols + k)]
               : int8.codes[row * matrix.cols + k];
  }
  float BlockAbsmax(int64_t row, int64_t b) const {  // NF4: the block's absmax
    const int64_t block = row * (matrix.cols / kNf4BlockSize) + b;
    return double_quant ? DequantizeAbsmaxAt(*double_quant, block) : nf4_blocks.block_absmax[block];
  }
};

// Random codes over the whole range; scales 2^e (power_of_two) or random.
std::unique_ptr<Weights> RandomWeights(std::mt19937_64& rng, bool nf4, bool double_quant,
                                       bool power_of_two, int rows, int cols) {
  auto w = std::make_unique<Weights>();
  w->nf4 = nf4;
  std::uniform_int_distribution<int> exponent(-1, 1);
  std::uniform_real_distribution<float> uniform(0.01f, 4.0f);
  auto scale = [&] { return power_of_two ? std::ldexp(1.0f, exponent(rng)) : uniform(rng); };
  const int64_t n = static_cast<int64_t>(rows) * cols;
  if (nf4) {
    std::uniform_int_distribution<int> byte(0, 255);
    w->nf4_blocks.numel = n;
    w->nf4_blocks.codes.resize(n / 2);
    for (uint8_t& c : w->nf4_blocks.codes) c = static_cast<uint8_t>(byte(rng));
    w->nf4_blocks.block_absmax.resize(n / kNf4BlockSize);
    for (float& a : w->nf4_blocks.block_absmax) a = scale();
    if (double_quant) {
      w->double_quant =
          std::make_unique<QuantizedAbsmax>(DoubleQuantize(w->nf4_blocks.block_absmax));
      w->nf4_blocks.block_absmax.clear();
    }
    w->matrix = Matrix::Nf4(w->nf4_blocks, rows, cols, w->double_quant.get());
  } else {
    std::uniform_int_distribution<int> code(-127, 127);
    w->int8.rows = rows;
    w->int8.cols = cols;
    w->int8.codes.resize(n);
    for (int8_t& c : w->int8.codes) c = static_cast<int8_t>(code(rng));
    w->int8.row_absmax.resize(rows);
    for (float& a : w->int8.row_absmax) a = scale();
    w->matrix = Matrix::Int8(w->int8);
  }
  return w;
}

// The reference of the quantized arithmetic (int8_activations.h): exact block sums, the
// blocks' scaled sums accumulated in double, then the final scaling in fp32 as the kernels do
// it. `magnitude`: Σ_b scale_b · Σ_k |w_k·q_k| (the largest any partial sum can be, whatever
// the kernel's grouping), for the fp32 rounding bound.
float ReferenceOutput(const Weights& w, const Reference& x, int t, int64_t row, float bias,
                      double* magnitude) {
  const int64_t cols = w.matrix.cols, blocks = cols / kActivationBlock;
  double sum = 0.0;
  *magnitude = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t s = 0, abs_s = 0;
    for (int k = 0; k < kActivationBlock; ++k) {
      const int64_t product = static_cast<int64_t>(w.Code(row, b * kActivationBlock + k)) *
                              x.codes[(t * blocks + b) * kActivationBlock + k];
      s += product;
      abs_s += std::abs(product);
    }
    double scale = x.scales[t * blocks + b];
    if (w.nf4) scale = static_cast<float>(scale * w.BlockAbsmax(row, b));  // one fp32 product
    sum += scale * static_cast<double>(s);
    *magnitude += std::abs(scale) * static_cast<double>(abs_s);
  }
  const float row_scale = w.nf4 ? kInverse127 : w.int8.row_absmax[row] * kInverse127;
  return static_cast<float>(sum) * row_scale + bias;
}

// Runs `isa`'s MatMulInt8Activations and compares every output with ReferenceOutput: bit for
// bit (exact), or within fp32 rounding of the scaled block sums (an fp32 accumulation over the
// blocks and lanes, then two products).
void CheckAgainstReference(const Weights& w, const std::vector<float>& x,
                           const std::vector<float>& bias, int tokens, cpu::CpuIsa isa,
                           ThreadPool& pool, bool exact) {
  const int64_t rows = w.matrix.rows, cols = w.matrix.cols;
  std::vector<float> y(static_cast<size_t>(tokens) * rows);
  cpu::MatMulInt8Activations(w.matrix, bias.data(), x.data(), tokens, y.data(), pool, isa);
  const Reference ref = QuantizeByDefinition(x);
  for (int t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double magnitude;
      const float expected = ReferenceOutput(w, ref, t, r, bias[r], &magnitude);
      const float got = y[t * rows + r];
      if (exact) {
        ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected))
            << "token " << t << " row " << r << ": " << got << " vs " << expected;
      } else {
        const float row_scale = w.nf4 ? kInverse127 : w.int8.row_absmax[r] * kInverse127;
        const double bound = (cols / kActivationBlock + 20) * 0x1.0p-24 * magnitude * row_scale +
                             0x1.0p-23 * std::abs(expected);
        ASSERT_NEAR(got, expected, bound) << "token " << t << " row " << r;
      }
    }
  }
}

class Int8ActivationKernelsTest : public ::testing::TestWithParam<cpu::CpuIsa> {
 protected:
  void SetUp() override { SKIP_UNLESS_CPU_SUPPORTS(GetParam()); }
};

// Activations whose every fp32 operation in the kernels is exact: per block one element
// ±127·2^e (so d = 2^e and the codes are the integers below), four more random integers in
// [−127, 127]·2^e, the rest 0; |block sums| < 2^17, so with power-of-two weight scales every
// partial sum fits fp32's 24 bits whatever the order. The outputs must equal the reference
// bit for bit, so one integer off anywhere fails.
std::vector<float> ExactActivations(std::mt19937_64& rng, int tokens, int cols) {
  std::vector<float> x(static_cast<size_t>(tokens) * cols, 0.0f);
  std::uniform_int_distribution<int> position(0, kActivationBlock - 1), code(-127, 127),
      exponent(0, 1), sign(0, 1);
  for (size_t begin = 0; begin < x.size(); begin += kActivationBlock) {
    const float unit = std::ldexp(1.0f, exponent(rng));
    for (int j = 0; j < 4; ++j) x[begin + position(rng)] = code(rng) * unit;
    x[begin + position(rng)] = (sign(rng) != 0 ? 127.0f : -127.0f) * unit;
  }
  return x;
}

TEST_P(Int8ActivationKernelsTest, ExactWhereFp32IsExact) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  // Rows off the tiles, tokens across tile sizes and past a token block of 64.
  const int shapes[][3] = {{1, 64, 1}, {67, 192, 3}, {130, 512, 1}, {9, 128, 70}, {33, 256, 6}};
  for (bool nf4 : {false, true}) {
    for (const auto& shape : shapes) {
      const int rows = shape[0], cols = shape[1], tokens = shape[2];
      SCOPED_TRACE(::testing::Message()
                   << (nf4 ? "nf4 " : "int8 ") << rows << "x" << cols << " tokens " << tokens);
      const std::unique_ptr<Weights> w = RandomWeights(rng, nf4, false, true, rows, cols);
      const std::vector<float> x = ExactActivations(rng, tokens, cols);
      std::vector<float> bias(rows);
      for (float& b : bias) b = static_cast<float>(std::uniform_int_distribution<int>(-8, 8)(rng));
      ASSERT_NO_FATAL_FAILURE(
          CheckAgainstReference(*w, x, bias, tokens, GetParam(), pool, /*exact=*/true));
    }
  }
}

// Random activations and scales (double-quantized NF4 absmax too): within fp32 rounding.
TEST_P(Int8ActivationKernelsTest, MatchesReferenceWithinFp32Rounding) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  const int shapes[][3] = {{64, 1024, 1}, {75, 320, 5}, {16, 4096, 2}};
  for (int format = 0; format < 3; ++format) {
    const bool nf4 = format > 0, double_quant = format == 2;
    for (const auto& shape : shapes) {
      const int rows = shape[0], cols = shape[1], tokens = shape[2];
      SCOPED_TRACE(::testing::Message() << "format " << format << " " << rows << "x" << cols);
      const std::unique_ptr<Weights> w = RandomWeights(rng, nf4, double_quant, false, rows, cols);
      const std::vector<float> x = RandomFloats(rng, static_cast<size_t>(tokens) * cols);
      const std::vector<float> bias = RandomFloats(rng, rows);
      ASSERT_NO_FATAL_FAILURE(
          CheckAgainstReference(*w, x, bias, tokens, GetParam(), pool, /*exact=*/false));
    }
  }
}

// A batch gives each token exactly what it gets alone.
TEST_P(Int8ActivationKernelsTest, BatchedTokensEqualSingleTokensBitForBit) {
  std::mt19937_64 rng(TestSeed());
  ThreadPool pool(2);
  const int rows = 75, cols = 256, tokens = 41;
  for (bool nf4 : {false, true}) {
    const std::unique_ptr<Weights> w = RandomWeights(rng, nf4, nf4, false, rows, cols);
    const std::vector<float> x = RandomFloats(rng, static_cast<size_t>(tokens) * cols);
    std::vector<float> batched(static_cast<size_t>(tokens) * rows), single(batched.size());
    cpu::MatMulInt8Activations(w->matrix, nullptr, x.data(), tokens, batched.data(), pool,
                               GetParam());
    for (int t = 0; t < tokens; ++t) {
      cpu::MatMulInt8Activations(w->matrix, nullptr, &x[static_cast<size_t>(t) * cols], 1,
                                 &single[static_cast<size_t>(t) * rows], pool, GetParam());
    }
    ASSERT_EQ(std::memcmp(batched.data(), single.data(), batched.size() * sizeof(float)), 0)
        << (nf4 ? "nf4" : "int8");
  }
}

// Dense matrices, and quantized ones whose cols are not a multiple of 64, keep the exact path.
TEST_P(Int8ActivationKernelsTest, OtherMatricesKeepFp32Activations) {
  std::mt19937_64 rng(TestSeed());
  ThreadPool pool(2);
  const int rows = 10, cols = 96, tokens = 3;
  const std::vector<float> dense = RandomFloats(rng, static_cast<size_t>(rows) * cols);
  const Matrix f32{DType::kF32, rows, cols, reinterpret_cast<const std::byte*>(dense.data())};
  const Int8Rows int8 = QuantizeInt8Rows(dense, rows, cols);
  for (const Matrix& w : {f32, Matrix::Int8(int8)}) {
    EXPECT_FALSE(cpu::Int8ActivationsApply(w));
    const std::vector<float> x = RandomFloats(rng, static_cast<size_t>(tokens) * cols);
    std::vector<float> a(static_cast<size_t>(tokens) * rows), b(a.size());
    cpu::MatMulInt8Activations(w, nullptr, x.data(), tokens, a.data(), pool, GetParam());
    cpu::MatMul(w, nullptr, x.data(), tokens, b.data(), pool, GetParam());
    ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(CpuIsas, Int8ActivationKernelsTest, testing::kCpuIsas,
                         testing::CpuIsaTestName);

// kAvx512 runs the VNNI kernels where the CPU has them, the AVX2 ones where it does not.
TEST(Int8ActivationsTest, Avx512UsesVnniWhereTheCpuHasIt) {
  SKIP_UNLESS_CPU_SUPPORTS(cpu::CpuIsa::kAvx512);
  if (!cpu::CpuHasAvx512Vnni()) {
    EXPECT_STREQ(cpu::Int8ActivationsIsaName(cpu::CpuIsa::kAvx512), "avx2+fma+f16c");
    GTEST_SKIP() << "this CPU has AVX-512 but not AVX-512 VNNI: its kernels are the AVX2 ones";
  }
  EXPECT_STREQ(cpu::Int8ActivationsIsaName(cpu::CpuIsa::kAvx512), "avx512f+bw+vl+dq+vnni");
}

}  // namespace
}  // namespace sinkserve
