// Int8 and NF4 quantization bit-exact with bitsandbytes 0.50.2 (tests/fixtures/quant/).
#include "engine/quant.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>

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

}  // namespace
}  // namespace sinkserve
