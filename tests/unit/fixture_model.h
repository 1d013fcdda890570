// Loading the HF-generated fixture checkpoints and their reference tensors in tests.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/format/safetensors.h"
#include "tests/unit/test_util.h"

namespace sinkserve::testing {

// A tensor's elements copied out (reference files need not be aligned).
template <typename T>
std::vector<T> ReadTensor(const TensorInfo& info) {
  std::vector<T> values(info.numel());
  EXPECT_EQ(info.nbytes, values.size() * sizeof(T)) << info.name;
  std::memcpy(values.data(), info.data, info.nbytes);
  return values;
}

// Test fixture base: the model tests/fixtures/models/<GetParam()> and one of its reference
// files (reference.safetensors, streaming.safetensors).
class FixtureModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void LoadFixture(const std::string& reference_file) {
    const std::string dir = FixturePath("models/" + GetParam());
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(ModelOptions{dir, 2});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> reference =
        SafetensorsFile::Open(dir + "/" + reference_file);
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::move(*reference);
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<SafetensorsFile> reference_;
};

}  // namespace sinkserve::testing
