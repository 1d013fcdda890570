// Checkpoints that do not match their config.json are refused with the file and tensor named.
#include "engine/format/weights.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "engine/model.h"
#include "engine/format/safetensors.h"
#include "tests/support/safetensors_writer.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

const char kFixture[] = "models/pythia_f32_d64";

// Copies the fixture's tensors into a new checkpoint in `dir`, letting `edit` change the list.
void WriteEditedCheckpoint(const testing::TempDir& dir,
                           const std::function<void(std::vector<TensorToWrite>&)>& edit) {
  const std::string source = testing::FixturePath(kFixture);
  std::filesystem::copy(source + "/config.json", dir.File("config.json"));
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(source);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : (*checkpoint)->names()) {
    const TensorInfo* info = (*checkpoint)->Find(name);
    tensors.push_back({name, info->dtype, info->shape, std::span(info->data, info->nbytes)});
  }
  edit(tensors);
  ASSERT_TRUE(WriteSafetensors(dir.File("model.safetensors"), tensors).ok());
}

absl::Status LoadFrom(const testing::TempDir& dir) {
  return Model::Load(ModelOptions{dir.path(), 1}).status();
}

TEST(WeightsTest, UneditedCopyLoads) {
  testing::TempDir dir;
  WriteEditedCheckpoint(dir, [](std::vector<TensorToWrite>&) {});
  EXPECT_TRUE(LoadFrom(dir).ok()) << LoadFrom(dir);
}

TEST(WeightsTest, MissingTensorIsNamed) {
  testing::TempDir dir;
  WriteEditedCheckpoint(dir, [](std::vector<TensorToWrite>& tensors) {
    std::erase_if(tensors, [](const TensorToWrite& t) {
      return t.name == "gpt_neox.layers.1.mlp.dense_4h_to_h.weight";
    });
  });
  const absl::Status status = LoadFrom(dir);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_NE(status.message().find("gpt_neox.layers.1.mlp.dense_4h_to_h.weight"), std::string::npos)
      << status;
}

TEST(WeightsTest, WrongShapeNamesFileAndTensor) {
  testing::TempDir dir;
  WriteEditedCheckpoint(dir, [](std::vector<TensorToWrite>& tensors) {
    for (TensorToWrite& t : tensors) {
      if (t.name == "gpt_neox.layers.0.attention.query_key_value.weight") {
        t.shape = {t.shape[1], t.shape[0]};  // transposed
      }
    }
  });
  const absl::Status status = LoadFrom(dir);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("model.safetensors"), std::string::npos) << status;
  EXPECT_NE(status.message().find("query_key_value.weight"), std::string::npos) << status;
  EXPECT_NE(status.message().find("config.json implies"), std::string::npos) << status;
}

TEST(WeightsTest, IntegerWeightsAreRefused) {
  testing::TempDir dir;
  WriteEditedCheckpoint(dir, [](std::vector<TensorToWrite>& tensors) {
    for (TensorToWrite& t : tensors) {
      if (t.name == "gpt_neox.final_layer_norm.bias") t.dtype = DType::kI32;  // same byte size
    }
  });
  const absl::Status status = LoadFrom(dir);
  EXPECT_NE(status.message().find("final_layer_norm.bias"), std::string::npos) << status;
  EXPECT_NE(status.message().find("I32"), std::string::npos) << status;
}

TEST(WeightsTest, ConfigThatDisagreesWithTheTensors) {
  testing::TempDir dir;
  WriteEditedCheckpoint(dir, [](std::vector<TensorToWrite>&) {});
  std::string config = testing::ReadTextFile(dir.File("config.json"));
  const size_t at = config.find("\"num_hidden_layers\": 2");
  ASSERT_NE(at, std::string::npos) << config;
  config.replace(at, 22, "\"num_hidden_layers\": 3");
  testing::WriteTextFile(dir.File("config.json"), config);
  const absl::Status status = LoadFrom(dir);
  EXPECT_NE(status.message().find("gpt_neox.layers.2."), std::string::npos) << status;
}

}  // namespace
}  // namespace sinkserve
