// Int8 and NF4 quantization bit-exact with bitsandbytes 0.50.2 (tests/fixtures/quant/).
#include "engine/quant.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <random>
#include <tuple>

#include "engine/quant_kernels.h"
#include "engine/safetensors.h"
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

// A quantized layer's output equals dequantize(W)·x to fp32 rounding:
// |Δ| ≤ (cols + 2)·2^-23·Σ_k |dequant(w)[r][k]·x[k]| (ε stated per element).
TEST(QuantKernelsTest, EqualDequantizedProduct) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  for (const auto& [rows, cols, tokens] :
       {std::tuple{67, 128, 1}, {130, 256, 3}, {8, 64, 8}, {200, 1024, 2}}) {
    const std::vector<float> w = testing::RandomFloats(rng, static_cast<size_t>(rows) * cols);
    const std::vector<float> x = testing::RandomFloats(rng, static_cast<size_t>(tokens) * cols);
    const std::vector<float> bias = testing::RandomFloats(rng, rows);
    const Int8Rows int8 = QuantizeInt8Rows(w, rows, cols);
    const Nf4Blocks nf4 = QuantizeNf4(w);
    std::vector<float> int8_w(w.size()), nf4_w(w.size());
    DequantizeInt8Rows(int8, int8_w);
    DequantizeNf4(nf4, nf4_w);
    std::vector<float> y_int8(static_cast<size_t>(tokens) * rows), y_nf4(y_int8.size()),
        y_int8_portable(y_int8.size()), y_nf4_portable(y_int8.size());
    cpu::MatMulInt8(int8, bias.data(), x.data(), tokens, y_int8.data(), pool);
    cpu::MatMulNf4(nf4, rows, cols, bias.data(), x.data(), tokens, y_nf4.data(), pool);
    cpu::MatMulInt8Portable(int8, bias.data(), x.data(), tokens, y_int8_portable.data(), 0, rows);
    cpu::MatMulNf4Portable(nf4, cols, bias.data(), x.data(), tokens, y_nf4_portable.data(), rows,
                           0, rows);
    for (int t = 0; t < tokens; ++t) {
      for (int r = 0; r < rows; ++r) {
        double exact_int8 = bias[r], exact_nf4 = bias[r], mag_int8 = 0, mag_nf4 = 0;
        for (int k = 0; k < cols; ++k) {
          const double xk = x[static_cast<size_t>(t) * cols + k];
          exact_int8 += int8_w[static_cast<size_t>(r) * cols + k] * xk;
          exact_nf4 += nf4_w[static_cast<size_t>(r) * cols + k] * xk;
          mag_int8 += std::abs(int8_w[static_cast<size_t>(r) * cols + k] * xk);
          mag_nf4 += std::abs(nf4_w[static_cast<size_t>(r) * cols + k] * xk);
        }
        const size_t at = static_cast<size_t>(t) * rows + r;
        const double eps = (cols + 2) * 0x1.0p-23;
        ASSERT_NEAR(y_int8[at], exact_int8, eps * mag_int8 + 1e-6) << rows << "x" << cols;
        ASSERT_NEAR(y_int8_portable[at], exact_int8, eps * mag_int8 + 1e-6);
        ASSERT_NEAR(y_nf4[at], exact_nf4, eps * mag_nf4 + 1e-6) << rows << "x" << cols;
        ASSERT_NEAR(y_nf4_portable[at], exact_nf4, eps * mag_nf4 + 1e-6);
      }
    }
  }
}

}  // namespace
}  // namespace sinkserve
