// pytorch_model.bin against torch: the checkpoints in tests/fixtures/torch_bin were written by
// torch.save, and each reference.safetensors holds the same tensors as torch.load reads them
// (tests/fixtures/torch_bin/make_torch_bin_fixtures.py). The reader must give the same tensors,
// byte for byte, and a model loaded from the .bin files the same logits, bit for bit, as the
// safetensors copy. Files torch refuses are refused, with the reason and the file named; a
// Hugging Face cache folder loads as its snapshot.
#include "engine/format/torch_checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/format/model_directory.h"
#include "engine/format/pickle.h"
#include "engine/model.h"
#include "engine/format/safetensors.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

namespace fs = std::filesystem;
using std::string_literals::operator""s;

const std::vector<std::string> kModels = {"pythia_f32", "f16_sharded", "bf16_tied"};

std::string Fixture(const std::string& relative) {
  return testing::FixturePath("torch_bin/" + relative);
}

std::vector<std::byte> ReadBytes(const std::string& path) {
  const std::string text = testing::ReadTextFile(path);
  std::vector<std::byte> bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  return bytes;
}

// A model directory with config.json and the reference copied in as model.safetensors.
void MakeSafetensorsCopy(const std::string& model, const testing::TempDir& dir) {
  fs::copy_file(Fixture(model + "/config.json"), dir.File("config.json"));
  fs::copy_file(Fixture(model + "/reference.safetensors"), dir.File("model.safetensors"));
}

// Logits at every position of TOKENS, one forward pass.
std::vector<float> Logits(const std::string& dir, const std::vector<int32_t>& tokens,
                          std::string* name = nullptr) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(ModelOptions{dir, 1});
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  if (name != nullptr) *name = (*model)->name();
  std::unique_ptr<KvCache> cache =
      *(*model)->backend().NewDenseCache(static_cast<int>(tokens.size()));
  std::vector<float> logits(tokens.size() * (*model)->config().vocab_size);
  const absl::Status status = (*model)->backend().Forward(tokens, *cache, logits, true);
  EXPECT_TRUE(status.ok()) << status;
  return logits;
}

std::vector<int32_t> RandomTokens(int count) {
  const uint64_t seed = testing::TestSeed();
  std::printf("  SINKSERVE_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, 63);  // the fixtures' vocab is 64
  std::vector<int32_t> tokens(count);
  for (int32_t& t : tokens) t = id(rng);
  return tokens;
}

class TorchBinModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchBinModelTest, TensorsAreTorchLoadsByteForByte) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> bin = Checkpoint::Open(Fixture(GetParam()));
  ASSERT_TRUE(bin.ok()) << bin.status();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> reference =
      SafetensorsFile::Open(Fixture(GetParam() + "/reference.safetensors"));
  ASSERT_TRUE(reference.ok()) << reference.status();
  std::vector<std::string> reference_names;
  for (const TensorInfo& t : (*reference)->tensors()) reference_names.push_back(t.name);
  ASSERT_EQ((*bin)->names(), reference_names);
  for (const TensorInfo& expected : (*reference)->tensors()) {
    SCOPED_TRACE(expected.name);
    const TensorInfo* actual = (*bin)->Find(expected.name);
    ASSERT_NE(actual, nullptr);
    EXPECT_EQ(actual->dtype, expected.dtype);
    EXPECT_EQ(actual->shape, expected.shape);
    ASSERT_EQ(actual->nbytes, expected.nbytes);
    EXPECT_EQ(std::memcmp(actual->data, expected.data, expected.nbytes), 0);
    EXPECT_NE(actual->file.find(".bin"), std::string::npos) << actual->file;
  }
}

TEST_P(TorchBinModelTest, LogitsEqualTheSafetensorsCopyBitForBit) {
  testing::TempDir copy;
  MakeSafetensorsCopy(GetParam(), copy);
  const std::vector<int32_t> tokens = RandomTokens(24);
  const std::vector<float> from_bin = Logits(Fixture(GetParam()), tokens);
  const std::vector<float> from_safetensors = Logits(copy.path(), tokens);
  ASSERT_EQ(from_bin.size(), from_safetensors.size());
  ASSERT_FALSE(from_bin.empty());
  EXPECT_EQ(std::memcmp(from_bin.data(), from_safetensors.data(), from_bin.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TorchBinModelTest, ::testing::ValuesIn(kModels));

TEST(TorchCheckpointTest, ViewsStayInTheMappingAndStridedOnesAreCopied) {
  absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> file =
      TorchCheckpointFile::Open(Fixture("pythia_f32/pytorch_model.bin"));
  ASSERT_TRUE(file.ok()) << file.status();
  auto find = [&](const std::string& name) {
    const TensorInfo* t = (*file)->Find(name);
    EXPECT_NE(t, nullptr) << name;
    return t;
  };
  // query_key_value and dense of layer 0: one storage, the second at element 3 * 32 * 32.
  const TensorInfo* qkv = find("gpt_neox.layers.0.attention.query_key_value.weight");
  const TensorInfo* dense = find("gpt_neox.layers.0.attention.dense.weight");
  EXPECT_TRUE((*file)->InFile(qkv->data));
  EXPECT_EQ(dense->data - qkv->data, 3 * 32 * 32 * 4);
  // LayerNorm vectors of layer 1: views at offsets 0, 32, 64, 96 of one storage.
  const TensorInfo* first = find("gpt_neox.layers.1.input_layernorm.weight");
  EXPECT_EQ(find("gpt_neox.layers.1.post_attention_layernorm.bias")->data - first->data, 96 * 4);
  // The transposed dense_4h_to_h: copied out row-major, not a view of the file.
  const TensorInfo* down = find("gpt_neox.layers.0.mlp.dense_4h_to_h.weight");
  EXPECT_FALSE((*file)->InFile(down->data));
  EXPECT_EQ(down->shape, (std::vector<int64_t>{32, 64}));
  // The legacy buffers are there, as in the safetensors fixtures (the weights ignore them).
  EXPECT_EQ(find("gpt_neox.layers.0.attention.bias")->dtype, DType::kBool);
  EXPECT_TRUE(find("gpt_neox.layers.1.attention.masked_bias")->shape.empty());
  EXPECT_EQ(find("gpt_neox.layers.1.attention.rotary_emb.inv_freq")->shape,
            std::vector<int64_t>{2});
}

TEST(TorchCheckpointTest, TiedEmbeddingsShareOneStorage) {
  absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> file =
      TorchCheckpointFile::Open(Fixture("bf16_tied/pytorch_model.bin"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("embed_out.weight")->data,
            (*file)->Find("gpt_neox.embed_in.weight")->data);
}

TEST(TorchCheckpointTest, RefusesWhatTorchRefuses) {
  struct Case {
    std::string file;
    absl::StatusCode code;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"posix_system.bin", absl::StatusCode::kInvalidArgument,
       {"posix_system.bin", "archive/data.pkl", "global 'posix.system'", "refused"}},
      {"unknown_opcode.bin", absl::StatusCode::kInvalidArgument,
       {"unknown_opcode.bin", "pickle byte 2", "unknown opcode 0xf0"}},
      {"truncated.bin", absl::StatusCode::kDataLoss, {"truncated.bin", "truncated"}},
      {"view_past_storage.bin", absl::StatusCode::kInvalidArgument,
       {"view_past_storage.bin", "tensor 'w'", "size [3, 3]", "reaches element 8",
        "has 8 elements"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    auto file = TorchCheckpointFile::Open(Fixture("bad/" + c.file));
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), c.code) << file.status();
    for (const std::string& part : c.parts) {
      EXPECT_NE(file.status().message().find(part), std::string::npos)
          << "missing '" << part << "' in: " << file.status();
    }
  }
}

TEST(TorchCheckpointTest, EveryTruncationAndByteFlipFailsCleanly) {
  for (const std::string name : {"tiny.bin", "deflated.bin"}) {
    SCOPED_TRACE(name);
    const std::vector<std::byte> bytes = ReadBytes(Fixture("bad/" + name));
    ASSERT_TRUE(TorchCheckpointFile::FromBytes(bytes, name).ok());
    for (size_t size = 0; size < bytes.size(); ++size) {
      auto file = TorchCheckpointFile::FromBytes(std::span(bytes).first(size), name);
      EXPECT_FALSE(file.ok()) << "accepted the first " << size << " bytes";
      if (!file.ok()) {
        EXPECT_NE(file.status().message().find(name), std::string::npos) << file.status();
      }
    }
    // A flipped byte is caught, or lands in stored tensor data (whose CRC is not checked).
    std::vector<std::byte> flipped = bytes;
    for (size_t i = 0; i < flipped.size(); ++i) {
      flipped[i] ^= std::byte{0x5a};
      auto file = TorchCheckpointFile::FromBytes(flipped, name);
      if (!file.ok()) {
        EXPECT_NE(file.status().message().find(name), std::string::npos) << file.status();
      }
      flipped[i] = bytes[i];
    }
  }
}

TEST(TorchCheckpointTest, DeflatedEntriesAreInflatedToTheSameTensors) {
  auto stored = TorchCheckpointFile::Open(Fixture("bad/tiny.bin"));
  auto deflated = TorchCheckpointFile::Open(Fixture("bad/deflated.bin"));
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE(deflated.ok()) << deflated.status();
  ASSERT_EQ((*stored)->tensors().size(), 2u);
  ASSERT_EQ((*deflated)->tensors().size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const TensorInfo& a = (*stored)->tensors()[i];
    const TensorInfo& b = (*deflated)->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape);
    ASSERT_EQ(a.nbytes, b.nbytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name;
    EXPECT_TRUE((*stored)->InFile(a.data));
    EXPECT_FALSE((*deflated)->InFile(b.data));  // inflated into memory the file object owns
  }
}

TEST(TorchCheckpointTest, LegacyAndNonZipFilesAreNamed) {
  const std::string legacy = "\x80\x02\x8a\x0al\xfc\x9c";
  auto file = TorchCheckpointFile::FromBytes(
      std::span(reinterpret_cast<const std::byte*>(legacy.data()), legacy.size()), "old.bin");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find("legacy torch.save format"), std::string::npos)
      << file.status();
  const std::string text = "not a checkpoint";
  file = TorchCheckpointFile::FromBytes(
      std::span(reinterpret_cast<const std::byte*>(text.data()), text.size()), "text.bin");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find("not a zip archive"), std::string::npos)
      << file.status();
}

TEST(TorchCheckpointTest, MissingShardIsNamedWithItsIndex) {
  testing::TempDir dir;
  for (const auto& entry : fs::directory_iterator(Fixture("f16_sharded"))) {
    if (entry.path().filename() == "reference.safetensors") continue;
    fs::copy(entry.path(), dir.File(entry.path().filename().string()));
  }
  fs::remove(dir.File("pytorch_model-00002-of-00002.bin"));
  auto checkpoint = Checkpoint::Open(dir.path());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound) << checkpoint.status();
  for (const std::string part : {"pytorch_model.bin.index.json", "pytorch_model-00002-of-00002.bin",
                                 "incomplete"}) {
    EXPECT_NE(checkpoint.status().message().find(part), std::string::npos) << checkpoint.status();
  }
}

// The unpickler alone: globals and opcodes outside the allowed set never run.
TEST(PickleTest, RefusesGlobalsAndOpcodesThatBuildObjects) {
  const PickleGlobal allowed[] = {{"collections", "OrderedDict", true}};
  auto refuse = [&](const std::string& program, const std::string& expected) {
    absl::StatusOr<Pickle> pickle = Unpickle(program, "p.pkl", allowed);
    ASSERT_FALSE(pickle.ok()) << program;
    EXPECT_NE(pickle.status().message().find(expected), std::string::npos) << pickle.status();
    EXPECT_NE(pickle.status().message().find("p.pkl"), std::string::npos) << pickle.status();
  };
  refuse("\x80\x02" "cposix\nsystem\n" "X\x02\x00\x00\x00" "ls" "\x85R."s,
         "global 'posix.system'");
  refuse("\x80\x02" "cbuiltins\neval\n."s, "global 'builtins.eval'");
  refuse("\x80\x04\x8c\x08" "builtins" "\x8c\x04" "exec" "\x93."s, "global 'builtins.exec'");
  refuse("\x80\x02" "ccollections\nOrderedDict\n)\x81."s, "opcode NEWOBJ");
  refuse("\x80\x02(ccollections\nOrderedDict\nio."s, "opcode INST");
  refuse("\x80\x02\x82\x01."s, "opcode EXT1");
  refuse("\x80\x02K\x01)R."s, "REDUCE calls the int 1");
  refuse("\x80\x02K\x01"s, "before its STOP");
  refuse("\x80\x02t."s, "without a MARK");
  refuse("\x80\x02h\x05."s, "memo entry 5");
}

TEST(PickleTest, BuildsTheValuesTorchSaveEmits) {
  const PickleGlobal allowed[] = {{"collections", "OrderedDict", true}};
  // OrderedDict() with one item set and a BUILD state, as torch.save writes a state dict.
  const std::string program =
      "\x80\x02" "ccollections\nOrderedDict\n" "q\x00" ")R" "q\x01" "(X\x01\x00\x00\x00" "a"
      "K\x07" "\x8a\x02\x00\x80" "\x86" "u" "}" "b" "h\x01" "\x85" "."s;
  absl::StatusOr<Pickle> pickle = Unpickle(program, "p.pkl", allowed);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const PickleObject& root = pickle->at(pickle->root);
  ASSERT_EQ(root.kind, PickleValue::Kind::kTuple);
  const PickleObject& dict = pickle->at(root.items[0]);
  ASSERT_EQ(dict.kind, PickleValue::Kind::kCall);
  EXPECT_EQ(pickle->at(dict.items[0]).text, "collections.OrderedDict");
  ASSERT_EQ(dict.entries.size(), 1u);
  EXPECT_EQ(pickle->at(dict.entries[0].first).text, "a");
  const PickleObject& pair = pickle->at(dict.entries[0].second);
  ASSERT_EQ(pair.items.size(), 2u);
  EXPECT_EQ(pair.items[0].number, 7);
  EXPECT_EQ(pair.items[1].number, -32768);  // LONG1 0x8000, sign-extended
  EXPECT_EQ(dict.items.size(), 3u);           // callable, args, BUILD state
}

// A Hugging Face hub cache folder as huggingface_hub lays it out: blobs named by hash,
// snapshots/REVISION/ of relative symlinks into them, refs/main naming the revision.
void MakeHubCache(const fs::path& cache, const std::string& model,
                  const std::vector<std::string>& revisions, bool with_ref) {
  for (const std::string& revision : revisions) {
    fs::create_directories(cache / "snapshots" / revision);
    fs::create_directories(cache / "blobs");
    for (const auto& entry : fs::directory_iterator(Fixture(model))) {
      const std::string name = entry.path().filename().string();
      if (name == "reference.safetensors") continue;
      const std::string blob = revision + "-" + name;  // stands in for the sha256
      fs::copy_file(entry.path(), cache / "blobs" / blob, fs::copy_options::overwrite_existing);
      fs::create_symlink(fs::path("../../blobs") / blob, cache / "snapshots" / revision / name);
    }
  }
  if (with_ref) {
    fs::create_directories(cache / "refs");
    testing::WriteTextFile((cache / "refs" / "main").string(), revisions.back() + "\n");
  }
}

TEST(HubCacheTest, CacheFolderAndSnapshotLoadThroughTheirSymlinks) {
  testing::TempDir root, copy;
  const fs::path cache = fs::path(root.path()) / "models--EleutherAI--tiny-pythia";
  MakeHubCache(cache, "f16_sharded", {"0123abcd", "4567ef01"}, /*with_ref=*/true);
  MakeSafetensorsCopy("f16_sharded", copy);
  const std::vector<int32_t> tokens = RandomTokens(8);
  const std::vector<float> expected = Logits(copy.path(), tokens);
  for (const fs::path& dir : {cache, cache / "snapshots" / "4567ef01"}) {
    SCOPED_TRACE(dir);
    std::string name;
    const std::vector<float> logits = Logits(dir.string(), tokens, &name);
    EXPECT_EQ(name, "tiny-pythia");
    ASSERT_EQ(logits.size(), expected.size());
    EXPECT_EQ(std::memcmp(logits.data(), expected.data(), logits.size() * 4), 0);
  }
  absl::StatusOr<ModelDirectory> resolved = ResolveModelDirectory(cache.string());
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->path, (cache / "snapshots" / "4567ef01").string());
}

TEST(HubCacheTest, SnapshotChoiceIsExplainedWhenAmbiguousOrMissing) {
  testing::TempDir root;
  const fs::path cache = fs::path(root.path()) / "models--org--m";
  MakeHubCache(cache, "bf16_tied", {"aaaa", "bbbb"}, /*with_ref=*/false);
  absl::StatusOr<ModelDirectory> resolved = ResolveModelDirectory(cache.string());
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument) << resolved.status();
  for (const std::string part : {"2 snapshots", "refs/main", "snapshots/aaaa", "snapshots/bbbb"}) {
    EXPECT_NE(resolved.status().message().find(part), std::string::npos) << resolved.status();
  }
  fs::create_directories(cache / "refs");
  testing::WriteTextFile((cache / "refs" / "main").string(), "cccc");
  resolved = ResolveModelDirectory(cache.string());
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kNotFound) << resolved.status();
  EXPECT_NE(resolved.status().message().find("'cccc'"), std::string::npos) << resolved.status();
  fs::remove(cache / "refs" / "main");
  fs::remove_all(cache / "snapshots" / "aaaa");
  resolved = ResolveModelDirectory(cache.string());
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->path, (cache / "snapshots" / "bbbb").string());
  EXPECT_EQ(resolved->name, "m");
}

}  // namespace
}  // namespace sinkserve
