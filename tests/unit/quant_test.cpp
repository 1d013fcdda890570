// Int8 and NF4 quantization bit-exact with bitsandbytes 0.50.2 (tests/fixtures/quant/).
#include "engine/format/quant.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <random>
#include <tuple>

#include "engine/cpu/cpu_kernels.h"
#include "engine/format/weights.h"
#include "engine/format/safetensors.h"
#include "tests/unit/cpu_isa_params.h"
#include "tests/unit/fixture_model.h"

namespace sinkserve {
namespace {

using testing::ReadTensor;

class QuantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(testing::FixturePath("quant/quant_reference.safetensors"));
    ASSERT_TRUE(file.ok()) << file.status();
    reference_ = std::move(*file);
  }
  const TensorInfo& Get(const std::string& name) {
    const TensorInfo* info = reference_->Find(name);
    EXPECT_NE(info, nullptr) << name;
    return *info;
  }
  // Bitwise comparison of floats (so -0 vs 0 and every ulp count).
  static void ExpectBitEqual(std::span<const float> a, std::span<const float> b,
                             const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i]))
          << what << " at " << i << ": " << a[i] << " vs " << b[i];
    }
  }

  std::unique_ptr<SafetensorsFile> reference_;
};

TEST_F(QuantTest, Nf4TableMatchesReference) {
  ExpectBitEqual(kNf4Values, ReadTensor<float>(Get("nf4_table")), "nf4_table");
}

TEST_F(QuantTest, Int8CodesAndScalesAreBnbExact) {
  for (int i = 0; i < 4; ++i) {
    const std::string n = std::to_string(i);
    const TensorInfo& w_info = Get("w." + n);
    const std::vector<float> w = ReadTensor<float>(w_info);
    const Int8Rows q = QuantizeInt8Rows(w, w_info.shape[0], w_info.shape[1]);
    EXPECT_EQ(q.codes, ReadTensor<int8_t>(Get("int8.codes." + n))) << "case " << i;
    ExpectBitEqual(q.row_absmax, ReadTensor<float>(Get("int8.scb." + n)), "scb " + n);
    std::vector<float> dequant(w.size());
    DequantizeInt8Rows(q, dequant);
    ExpectBitEqual(dequant, ReadTensor<float>(Get("int8.dequant." + n)), "int8 dequant " + n);
  }
}

TEST_F(QuantTest, Nf4CodesAndAbsmaxAreBnbExact) {
  for (int i = 0; i < 4; ++i) {
    const std::string n = std::to_string(i);
    const std::vector<float> w = ReadTensor<float>(Get("w." + n));
    const Nf4Blocks q = QuantizeNf4(w);
    EXPECT_EQ(q.codes, ReadTensor<uint8_t>(Get("nf4.codes." + n))) << "case " << i;
    ExpectBitEqual(q.block_absmax, ReadTensor<float>(Get("nf4.absmax." + n)), "absmax " + n);
    std::vector<float> dequant(w.size());
    DequantizeNf4(q, dequant);
    ExpectBitEqual(dequant, ReadTensor<float>(Get("nf4.dequant." + n)), "nf4 dequant " + n);
  }
}

TEST_F(QuantTest, DynamicMapMatchesReference) {
  ExpectBitEqual(kDynamicMap, ReadTensor<float>(Get("dynamic_map")), "dynamic_map");
}

// Double-quantized absmax: with bnb's offset the codes and scales are bit-exact; with our own
// fp32 mean the offset is within an ulp of torch's, and a code can flip at a midpoint, so the
// recovered absmax is within half a code step (≤ 1% of the block scale).
TEST_F(QuantTest, DoubleQuantizedAbsmaxIsBnbExact) {
  struct Case {
    std::string absmax, codes, scale, offset, dequant;
  };
  std::vector<Case> cases = {{"dqx.absmax", "dqx.absmax_codes", "dqx.absmax_scale", "dqx.offset",
                              "dqx.absmax_dequant"}};
  for (int i = 0; i < 4; ++i) {
    const std::string n = std::to_string(i);
    cases.push_back({"nf4.absmax." + n, "nf4dq.absmax_codes." + n, "nf4dq.absmax_scale." + n,
                     "nf4dq.offset." + n, "nf4dq.absmax_dequant." + n});
  }
  for (const Case& c : cases) {
    const std::vector<float> absmax = ReadTensor<float>(Get(c.absmax));
    const float bnb_offset = ReadTensor<float>(Get(c.offset))[0];
    const QuantizedAbsmax q = DoubleQuantize(absmax, bnb_offset);
    EXPECT_EQ(q.codes, ReadTensor<uint8_t>(Get(c.codes))) << c.codes;
    ExpectBitEqual(q.block_scale, ReadTensor<float>(Get(c.scale)), c.scale);
    std::vector<float> recovered(absmax.size());
    DequantizeAbsmax(q, recovered);
    ExpectBitEqual(recovered, ReadTensor<float>(Get(c.dequant)), c.dequant);

    const QuantizedAbsmax own = DoubleQuantize(absmax);
    EXPECT_LE(std::abs(own.offset - bnb_offset), std::abs(bnb_offset) * 2.5e-7f) << c.offset;
    DequantizeAbsmax(own, recovered);
    const std::vector<float> expected = ReadTensor<float>(Get(c.dequant));
    for (size_t k = 0; k < expected.size(); ++k) {
      ASSERT_NEAR(recovered[k], expected[k], 1e-6f + 1e-2f * q.block_scale[k / 256]) << k;
    }
  }
}

}  // namespace
}  // namespace sinkserve

namespace sinkserve {
namespace {

// A quantized matrix of one of the formats, with the storage its view points into.
struct QuantizedCase {
  std::string name;
  Int8Rows int8;
  Nf4Blocks nf4;
  QuantizedAbsmax absmax;
  Matrix matrix;
};

std::vector<std::unique_ptr<QuantizedCase>> QuantizeAllWays(const std::vector<float>& w,
                                                            int64_t rows, int64_t cols) {
  std::vector<std::unique_ptr<QuantizedCase>> cases;
  auto int8 = std::make_unique<QuantizedCase>();
  int8->name = "int8";
  int8->int8 = QuantizeInt8Rows(w, rows, cols);
  int8->matrix = Matrix::Int8(int8->int8);
  cases.push_back(std::move(int8));
  if ((rows * cols) % kNf4BlockSize != 0) return cases;
  auto nf4 = std::make_unique<QuantizedCase>();
  nf4->name = "nf4";
  nf4->nf4 = QuantizeNf4(w);
  nf4->matrix = Matrix::Nf4(nf4->nf4, rows, cols);
  cases.push_back(std::move(nf4));
  auto double_quant = std::make_unique<QuantizedCase>();
  double_quant->name = "nf4+double-quant";
  double_quant->nf4 = QuantizeNf4(w);
  double_quant->absmax = DoubleQuantize(double_quant->nf4.block_absmax);
  double_quant->nf4.block_absmax.clear();
  double_quant->matrix = Matrix::Nf4(double_quant->nf4, rows, cols, &double_quant->absmax);
  cases.push_back(std::move(double_quant));
  return cases;
}

class QuantKernelsTest : public ::testing::TestWithParam<cpu::CpuIsa> {
 protected:
  void SetUp() override { SKIP_UNLESS_CPU_SUPPORTS(GetParam()); }
};

// A quantized layer's output equals dequantize(W)·x to fp32 rounding, for each kernel set
// (every tile shape: 1..16 tokens and 37, past a token block; odd row counts; 1-3 threads)
// and the portable reference: |Δ| ≤ (cols + 2)·2^-23·Σ_k |dequant(w)[r][k]·x[k]| (ε stated
// per element). And a batch of tokens gives each token exactly (bitwise) what it gets alone:
// the kernels' per-(row, token) arithmetic does not depend on the tile it lands in.
TEST_P(QuantKernelsTest, EqualDequantizedProductForEveryTileAndThreadCount) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  constexpr int kMaxTokens = 37;
  std::vector<int> token_counts = {kMaxTokens};
  for (int tokens = 1; tokens <= 16; ++tokens) token_counts.push_back(tokens);
  // cols 160: NF4 blocks straddle rows (portable path); cols 200: int8 with a vector tail.
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{67, 128}, {13, 1024}, {130, 256},
                                   {1, 64}, {5, 160}, {9, 200}, {72, 192}}) {
    const std::vector<float> w = testing::RandomFloats(rng, static_cast<size_t>(rows * cols));
    const std::vector<float> bias = testing::RandomFloats(rng, rows);
    const std::vector<float> x =
        testing::RandomFloats(rng, static_cast<size_t>(kMaxTokens * cols));
    for (const auto& quantized : QuantizeAllWays(w, rows, cols)) {
      SCOPED_TRACE(quantized->name + " " + std::to_string(rows) + "x" + std::to_string(cols));
      const Matrix& m = quantized->matrix;
      std::vector<float> dequant(static_cast<size_t>(rows * cols));
      for (int64_t r = 0; r < rows; ++r) m.RowToFloat(r, &dequant[r * cols]);
      for (int threads = 1; threads <= 3; ++threads) {
        ThreadPool pool(threads);
        std::vector<float> single(static_cast<size_t>(kMaxTokens * rows));
        for (int t = 0; t < kMaxTokens; ++t) {
          cpu::MatMul(m, bias.data(), &x[t * cols], 1, &single[t * rows], pool, GetParam());
        }
        for (int tokens : token_counts) {
          std::vector<float> y(static_cast<size_t>(tokens * rows)), reference(y.size());
          cpu::MatMul(m, bias.data(), x.data(), tokens, y.data(), pool, GetParam());
          cpu::MatMulReference(m, bias.data(), x.data(), tokens, reference.data());
          for (int t = 0; t < tokens; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double exact = bias[r], magnitude = 0;
              for (int64_t k = 0; k < cols; ++k) {
                const double product = static_cast<double>(dequant[r * cols + k]) * x[t * cols + k];
                exact += product;
                magnitude += std::abs(product);
              }
              const double eps = (cols + 2) * 0x1.0p-23 * magnitude + 1e-6;
              const size_t at = static_cast<size_t>(t * rows + r);
              ASSERT_NEAR(y[at], exact, eps) << "tokens " << tokens << " threads " << threads
                                             << " row " << r << " token " << t;
              ASSERT_NEAR(reference[at], exact, eps) << "reference, row " << r;
            }
          }
          ASSERT_EQ(std::memcmp(y.data(), single.data(), y.size() * sizeof(float)), 0)
              << "a batch of " << tokens << " differs from single tokens (threads " << threads
              << ")";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CpuIsas, QuantKernelsTest, testing::kCpuIsas, testing::CpuIsaTestName);

// Matrix::bytes() counts the codes and every statistic, nothing else.
TEST(QuantMatrixTest, BytesAreCodesPlusStatistics) {
  std::mt19937_64 rng(7);
  const std::vector<float> w = testing::RandomFloats(rng, 96 * 640);
  const auto cases = QuantizeAllWays(w, 96, 640);
  EXPECT_EQ(cases[0]->matrix.bytes(), 96u * 640 + 96 * 4);                   // int8
  EXPECT_EQ(cases[1]->matrix.bytes(), 96u * 640 / 2 + 96 * 640 / 64 * 4);    // nf4
  // Double quant: 960 absmax → 960 codes, 4 block scales (256 each), one offset.
  EXPECT_EQ(cases[2]->matrix.bytes(), 96u * 640 / 2 + 960 + 4 * 4 + 4);
}

}  // namespace
}  // namespace sinkserve
