// Tests of the safetensors reader: round trips through WriteSafetensors, a file written by the
// official Python package, every malformed case the reader must refuse (with the file and tensor
// named), truncation and corruption at every byte, and sharded checkpoints.
#include "engine/format/safetensors.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>


namespace sinkserve {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "sinkserve_st_XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << std::strerror(errno);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<std::byte> ToBytes(std::string_view text) {
  std::vector<std::byte> out(text.size());
  if (!text.empty()) std::memcpy(out.data(), text.data(), text.size());
  return out;
}

// [u64 LE header length][header][data] with no padding: lets tests state every byte.
std::vector<std::byte> BuildFile(std::string_view header, const std::vector<std::byte>& data,
                                 std::optional<uint64_t> declared_length = std::nullopt) {
  const uint64_t length = declared_length.value_or(header.size());
  std::vector<std::byte> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>(length >> (8 * i)));
  const auto h = ToBytes(header);
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void WriteFile(const fs::path& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::byte> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

std::vector<std::byte> Span(const TensorInfo& t) { return {t.data, t.data + t.nbytes}; }

// FNV-1a 64, as make_safetensors_fixture.py computes it.
std::string Fnv1a64(std::span<const std::byte> bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (std::byte b : bytes) {
    h ^= static_cast<uint64_t>(b);
    h *= 0x100000001B3ull;
  }
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(h));
  return text;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  SafetensorsTest() : seed_(std::random_device{}()), rng_(seed_) {}

  void SetUp() override {
    trace_.emplace(__FILE__, __LINE__, "random seed " + std::to_string(seed_));
  }

  std::string PathOf(std::string_view name) const { return (dir_.path() / name).string(); }

  // Random bytes, never all zero (a reader that ignored offsets could pass on zeros).
  std::vector<std::byte> RandomBytes(size_t n) {
    std::vector<std::byte> out(n);
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& b : out) b = static_cast<std::byte>(byte(rng_));
    if (n > 0) out[n / 2] |= std::byte{0x5A};
    return out;
  }

  // Writes a raw file and opens it; the message of any error must name the file.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenRaw(std::string_view name,
                                                           const std::vector<std::byte>& bytes) {
    const std::string path = PathOf(name);
    WriteFile(path, bytes);
    auto result = SafetensorsFile::Open(path);
    if (!result.ok()) {
      EXPECT_NE(result.status().message().find(path), std::string::npos)
          << "message does not name the file: " << result.status();
    }
    return result;
  }

  // Opens HEADER + DATA and expects CODE with every one of PARTS in the message.
  void ExpectBad(std::string_view header, const std::vector<std::byte>& data, absl::StatusCode code,
                 std::initializer_list<std::string_view> parts) {
    SCOPED_TRACE(std::string(header));
    auto file = OpenRaw("bad.safetensors", BuildFile(header, data));
    ASSERT_FALSE(file.ok()) << "accepted header " << header;
    EXPECT_EQ(file.status().code(), code) << file.status();
    for (std::string_view part : parts) {
      EXPECT_NE(std::string(file.status().message()).find(part), std::string::npos)
          << "'" << part << "' missing from: " << file.status();
    }
  }

  TempDir dir_;
  uint32_t seed_;
  std::mt19937 rng_;
  std::optional<::testing::ScopedTrace> trace_;
};

// ---------------------------------------------------------------------------------------------
// dtype.h

TEST(DTypeTest, NamesSizesAndParsing) {
  const std::pair<DType, size_t> kAll[] = {
      {DType::kF32, 4}, {DType::kF16, 2}, {DType::kBF16, 2}, {DType::kF64, 8}, {DType::kI8, 1},
      {DType::kU8, 1},  {DType::kI16, 2}, {DType::kI32, 4},  {DType::kI64, 8}, {DType::kBool, 1}};
  for (auto [dtype, size] : kAll) {
    EXPECT_EQ(DTypeSize(dtype), size) << DTypeName(dtype);
    EXPECT_EQ(ParseDType(DTypeName(dtype)), dtype);
  }
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kBool), "BOOL");
  for (std::string_view bad : {"", "f32", "F33", "U16", "U32", "F8_E4M3", "float32", "F32 "}) {
    EXPECT_EQ(ParseDType(bad), std::nullopt) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_F(SafetensorsTest, RoundTripKeepsBytesShapesAndMetadata) {
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Spec> specs = {{"layers.0.f32", DType::kF32, {3, 5}},
                                   {"layers.0.f16", DType::kF16, {7}},
                                   {"layers.1.bf16", DType::kBF16, {2, 3, 3}},
                                   {"ids.i32", DType::kI32, {5, 1}},
                                   {"ids.i64", DType::kI64, {3}},
                                   {"scalar.f32", DType::kF32, {}},
                                   {"empty.f16", DType::kF16, {0, 4}},
                                   {"odd.u8", DType::kU8, {3}}};
  std::vector<std::vector<std::byte>> data;
  std::vector<TensorToWrite> to_write;
  for (const Spec& s : specs) {
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    data.push_back(RandomBytes(static_cast<size_t>(numel) * DTypeSize(s.dtype)));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    to_write.push_back({specs[i].name, specs[i].dtype, specs[i].shape, data[i]});
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"seed", std::to_string(seed_)}};
  const std::string path = PathOf("round.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, to_write, metadata).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), path);
  EXPECT_EQ((*file)->metadata(), metadata);
  EXPECT_EQ((*file)->size_bytes(), fs::file_size(path));
  ASSERT_EQ((*file)->tensors().size(), specs.size());
  for (size_t i = 1; i < (*file)->tensors().size(); ++i) {
    EXPECT_LT((*file)->tensors()[i - 1].name, (*file)->tensors()[i].name);
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].name);
    const TensorInfo* t = (*file)->Find(specs[i].name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->name, specs[i].name);
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    EXPECT_EQ(t->nbytes, data[i].size());
    EXPECT_EQ(static_cast<size_t>(t->numel()) * DTypeSize(t->dtype), t->nbytes);
    EXPECT_EQ(Span(*t), data[i]);
    EXPECT_EQ(t->file, path);
    EXPECT_TRUE(t->IsAlignedFor()) << "writer should align like the official lib";
  }
  EXPECT_EQ((*file)->Find("absent"), nullptr);
  EXPECT_EQ((*file)->Find(""), nullptr);

  // The header is padded so the data area starts 8-byte aligned.
  const auto bytes = ReadFile(path);
  uint64_t header_bytes = 0;
  for (int i = 0; i < 8; ++i) header_bytes |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  EXPECT_EQ((8 + header_bytes) % 8, 0u);

  // FromBytes over the same bytes sees the same tensors, pointing into the caller's buffer.
  auto view = SafetensorsFile::FromBytes(bytes, "in-memory");
  ASSERT_TRUE(view.ok()) << view.status();
  for (const TensorInfo& t : (*view)->tensors()) {
    EXPECT_GE(t.data, bytes.data());
    EXPECT_LE(t.data + t.nbytes, bytes.data() + bytes.size());
    EXPECT_EQ(Span(t), Span(*(*file)->Find(t.name)));
    EXPECT_EQ(t.file, "in-memory");
  }
}

TEST_F(SafetensorsTest, NoTensorsIsAValidFile) {
  const std::string path = PathOf("none.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_TRUE((*file)->metadata().empty());
  EXPECT_EQ(fs::file_size(path), 16u);  // prefix + "{}" padded to 8

  auto bare = OpenRaw("bare.safetensors", BuildFile("{}", {}));
  ASSERT_TRUE(bare.ok()) << bare.status();
  auto meta_only = OpenRaw("meta.safetensors", BuildFile(R"({"__metadata__":{"a":"b"}})", {}));
  ASSERT_TRUE(meta_only.ok()) << meta_only.status();
  EXPECT_EQ((*meta_only)->metadata().at("a"), "b");
}

TEST_F(SafetensorsTest, WriterRefusesBadInput) {
  const auto four = RandomBytes(4);
  const std::string path = PathOf("w.safetensors");
  const TensorToWrite dup[] = {{"a", DType::kF32, {1}, four}, {"a", DType::kF32, {1}, four}};
  EXPECT_EQ(WriteSafetensors(path, dup).code(), absl::StatusCode::kInvalidArgument);
  const TensorToWrite reserved[] = {{"__metadata__", DType::kF32, {1}, four}};
  EXPECT_EQ(WriteSafetensors(path, reserved).code(), absl::StatusCode::kInvalidArgument);
  const TensorToWrite negative[] = {{"a", DType::kF32, {-1}, four}};
  EXPECT_EQ(WriteSafetensors(path, negative).code(), absl::StatusCode::kInvalidArgument);
  const TensorToWrite wrong_size[] = {{"a", DType::kF16, {1}, four}};
  EXPECT_EQ(WriteSafetensors(path, wrong_size).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(path));
  const TensorToWrite ok[] = {{"a", DType::kF32, {1}, four}};
  EXPECT_FALSE(WriteSafetensors((dir_.path() / "no" / "such" / "dir.st").string(), ok).ok());
}

// A file written by the official Python package (tests/fixtures/safetensors/
// make_safetensors_fixture.py), checked against what that script recorded.
TEST_F(SafetensorsTest, ReadsFileWrittenByOfficialLibrary) {
  const std::string dir = std::string(SINKSERVE_FIXTURES) + "/safetensors";
  std::ifstream expected_in(dir + "/reference.json");
  ASSERT_TRUE(expected_in.good()) << dir << "/reference.json";
  const nlohmann::json expected = nlohmann::json::parse(expected_in);

  auto file = SafetensorsFile::Open(dir + "/reference.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size_bytes(), expected["file_bytes"].get<uint64_t>());
  const auto want_metadata = expected["metadata"].get<std::map<std::string, std::string>>();
  EXPECT_EQ((*file)->metadata(), want_metadata);
  ASSERT_EQ((*file)->tensors().size(), expected["tensors"].size());
  const std::byte* data_area = nullptr;
  for (const auto& [name, want] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    const TensorInfo* t = (*file)->Find(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(DTypeName(t->dtype), want["dtype"].get<std::string>());
    EXPECT_EQ(t->shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(t->nbytes, want["nbytes"].get<size_t>());
    EXPECT_EQ(Fnv1a64({t->data, t->nbytes}), want["fnv1a64"].get<std::string>());
    EXPECT_TRUE(t->IsAlignedFor());
    const auto begin = want["data_offsets"][0].get<size_t>();
    if (data_area == nullptr) data_area = t->data - begin;
    EXPECT_EQ(t->data, data_area + begin);
  }
  EXPECT_EQ((*file)->Find("scalar")->numel(), 1);
  EXPECT_EQ((*file)->Find("empty")->numel(), 0);
}

// ---------------------------------------------------------------------------------------------
// Malformed files

TEST_F(SafetensorsTest, RefusesFilesTooShortForTheLengthPrefix) {
  for (size_t size : {0, 1, 7}) {
    auto file = OpenRaw("short.safetensors", std::vector<std::byte>(size, std::byte{1}));
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << file.status();
    EXPECT_EQ(SafetensorsFile::FromBytes(RandomBytes(size), "mem").status().code(),
              absl::StatusCode::kDataLoss);
  }
}

TEST_F(SafetensorsTest, RefusesHeaderLengthPastEndOrAbsurd) {
  const std::string header = "{}";
  auto past = OpenRaw("past.safetensors", BuildFile(header, {}, header.size() + 1));
  EXPECT_EQ(past.status().code(), absl::StatusCode::kDataLoss) << past.status();
  for (uint64_t absurd : {uint64_t{100'000'001}, uint64_t{1} << 63, ~uint64_t{0}}) {
    auto file = OpenRaw("absurd.safetensors", BuildFile(header, {}, absurd));
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    EXPECT_NE(file.status().message().find("limit"), std::string::npos) << file.status();
  }
}

TEST_F(SafetensorsTest, RefusesHeadersThatAreNotAUtf8JsonObject) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  ExpectBad("", {}, kInvalid, {"JSON"});
  ExpectBad("{\"a\":", {}, kInvalid, {"JSON"});
  ExpectBad("{} x", {}, kInvalid, {"JSON"});
  ExpectBad("[]", {}, kInvalid, {"expected an object"});
  ExpectBad("\"text\"", {}, kInvalid, {"expected an object"});
  ExpectBad("{\"\xff\":1}", {}, kInvalid, {"UTF-8"});
  ExpectBad("{\"\xc0\xaf\":1}", {}, kInvalid, {"UTF-8"});        // overlong '/'
  ExpectBad("{\"\xed\xa0\x80\":1}", {}, kInvalid, {"UTF-8"});    // surrogate
  ExpectBad("{\"\\ud800\":1}", {}, kInvalid, {"JSON"});          // escaped lone surrogate
  ExpectBad("{/*c*/}", {}, kInvalid, {"JSON"});                  // no comments
  ExpectBad(std::string("{}  \0 x", 7), {}, kInvalid, {"NUL"});  // nlohmann would stop at NUL
  ExpectBad(std::string("{}\0\0", 4), {}, kInvalid, {"NUL"});
  ExpectBad("\xEF\xBB\xBF{}", {}, kInvalid, {"byte order mark"});  // serde_json refuses it too
  std::string deep = R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":)";
  deep += std::string(200, '[') + std::string(200, ']') + "}}";
  ExpectBad(deep, {}, kInvalid, {"deeper"});
  // Padding with spaces after the object (as the official writer does) is fine.
  auto padded = OpenRaw("padded.safetensors", BuildFile("{}      ", {}));
  EXPECT_TRUE(padded.ok()) << padded.status();
}

TEST_F(SafetensorsTest, RefusesEntriesWithMissingOrMistypedFields) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const auto d4 = RandomBytes(4);
  ExpectBad(R"({"w":5})", d4, kInvalid, {"'w'", "expected an object"});
  ExpectBad(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", d4, kInvalid, {"'w'", "dtype"});
  ExpectBad(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", d4, kInvalid, {"'w'", "shape"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[1]}})", d4, kInvalid, {"'w'", "data_offsets"});
  ExpectBad(R"({"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "dtype"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "shape"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":{"0":1},"data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "shape"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "shape[0]"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "shape[0]"});
  for (std::string_view offsets :
       {R"({"a":0})", "[4]", "[0,4,4]", R"(["0","4"])", "[0,4.0]", "[0,-4]", "[-0,4]", "[-0.0,4]",
        "[0,1e1]", "null", "[0,18446744073709551616]"}) {
    ExpectBad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)" + std::string(offsets) + "}}",
              d4, kInvalid, {"'w'", "data_offsets"});
  }
  // Keys the format does not define are ignored, as by the official lib.
  auto extra =
      OpenRaw("extra.safetensors",
              BuildFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":[{}]}})", d4));
  EXPECT_TRUE(extra.ok()) << extra.status();
}

TEST_F(SafetensorsTest, RefusesUnknownAndUnsupportedDTypes) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const auto d4 = RandomBytes(4);
  ExpectBad(R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "unknown dtype 'F33'"});
  ExpectBad(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "unknown dtype"});
  ExpectBad(R"({"w":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}})", d4, kInvalid,
            {"'w'", "'U32' is not supported"});
}

TEST_F(SafetensorsTest, RefusesBadShapesAndSizes) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const auto d16 = RandomBytes(16);
  ExpectBad(R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", d16, kInvalid,
            {"'w'", "shape[0]", "non-negative"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", d16,
            kInvalid, {"'w'", "int64"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,16]}})", d16,
            kInvalid, {"'w'", "int64"});
  // An overflow before a zero dim is still an overflow (the official lib multiplies in order).
  ExpectBad(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4,0],"data_offsets":[0,0]}})", {},
            kInvalid, {"'w'", "int64"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}})", d16,
            kInvalid, {"'w'", "64 bits"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", RandomBytes(12),
            kInvalid, {"'w'", "needs 16 bytes", "span 12"});
  ExpectBad(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[8,4]}})", d16, kInvalid,
            {"'w'", "end before they begin"});
  // A zero dim after large ones is fine when no partial product overflows.
  auto zero = OpenRaw(
      "zero.safetensors",
      BuildFile(R"({"w":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}})",
                {}));
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ((*zero)->Find("w")->numel(), 0);
}

TEST_F(SafetensorsTest, RefusesOffsetsThatDoNotTileTheDataArea) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  // Past the end of the file: DATA_LOSS, the file was cut.
  ExpectBad(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", RandomBytes(8),
            absl::StatusCode::kDataLoss, {"'w'", "truncated"});
  ExpectBad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            RandomBytes(12), kInvalid, {"'b'", "overlap", "'a'"});
  ExpectBad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
            RandomBytes(8), kInvalid, {"overlap"});
  ExpectBad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
            RandomBytes(20), kInvalid, {"'b'", "unused"});
  ExpectBad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", RandomBytes(12), kInvalid,
            {"'a'", "unused"});
  ExpectBad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", RandomBytes(12), kInvalid,
            {"4 bytes after the last tensor"});
  ExpectBad("{}", RandomBytes(1), kInvalid, {"1 bytes after the last tensor"});
  // Header order need not be offset order; zero-sized tensors may share an offset.
  auto ok = OpenRaw("order.safetensors",
                    BuildFile(R"({"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},)"
                              R"("z":{"dtype":"F16","shape":[0],"data_offsets":[4,4]},)"
                              R"("y":{"dtype":"I8","shape":[0,9],"data_offsets":[4,4]},)"
                              R"("a":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})",
                              RandomBytes(8)));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->tensors().size(), 4u);
}

// The cap of common/base/strict_json.h: 64 levels of objects and arrays parse, 65 do not.
TEST_F(SafetensorsTest, NestingCapIsSixtyFourLevels) {
  // Root and entry are two levels; the ignored key "x" holds the rest.
  auto header = [](int arrays) {
    return R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":)" +
           std::string(arrays, '[') + std::string(arrays, ']') + "}}";
  };
  auto at_cap = OpenRaw("cap.safetensors", BuildFile(header(62), {}));
  EXPECT_TRUE(at_cap.ok()) << at_cap.status();
  ExpectBad(header(63), {}, absl::StatusCode::kInvalidArgument,
            {"bad.safetensors: header: JSON nests deeper than 64 levels (at 'w.x"});
}

TEST_F(SafetensorsTest, RefusesDuplicateKeysAndBadMetadata) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const auto d4 = RandomBytes(4);
  ExpectBad(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
            R"("w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
            d4, kInvalid, {"duplicate key 'w'"});
  ExpectBad(R"({"w":{"dtype":"U8","dtype":"I8","shape":[4],"data_offsets":[0,4]}})", d4, kInvalid,
            {"bad.safetensors: header: duplicate key 'dtype' in 'w'"});
  ExpectBad(R"({"__metadata__":"x"})", {}, kInvalid, {"__metadata__", "expected an object"});
  ExpectBad(R"({"__metadata__":{"k":1}})", {}, kInvalid, {"__metadata__", "'k'", "string"});
  ExpectBad(R"({"__metadata__":{"k":{"n":"v"}}})", {}, kInvalid, {"'k'"});
  auto null_meta = OpenRaw("null.safetensors", BuildFile(R"({"__metadata__":null})", {}));
  ASSERT_TRUE(null_meta.ok()) << null_meta.status();
  EXPECT_TRUE((*null_meta)->metadata().empty());
}

TEST_F(SafetensorsTest, ErrorMessagesEscapeAndCutHostileNames) {
  const std::string long_name(5000, 'n');
  auto file =
      OpenRaw("names.safetensors", BuildFile(R"({")" + long_name + R"(":{"dtype":"X"}})", {}));
  ASSERT_FALSE(file.ok());
  EXPECT_LT(file.status().message().size(), 600u) << file.status();
  EXPECT_NE(file.status().message().find("5000 bytes"), std::string::npos) << file.status();

  auto control = OpenRaw("ctl.safetensors", BuildFile(R"({"a\u001b[2Jb":{"dtype":"X"}})", {}));
  ASSERT_FALSE(control.ok());
  EXPECT_EQ(control.status().message().find('\x1b'), std::string::npos) << control.status();
  EXPECT_NE(control.status().message().find("a\\x1b[2Jb"), std::string::npos) << control.status();
}

TEST_F(SafetensorsTest, OpenRefusesMissingFilesDirectoriesAndFifos) {
  auto missing = SafetensorsFile::Open(PathOf("missing.safetensors"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find("missing.safetensors"), std::string::npos);

  fs::create_directory(PathOf("dir.safetensors"));
  auto directory = SafetensorsFile::Open(PathOf("dir.safetensors"));
  EXPECT_FALSE(directory.ok());
  EXPECT_NE(directory.status().message().find("dir.safetensors"), std::string::npos);

  ASSERT_EQ(::mkfifo(PathOf("fifo.safetensors").c_str(), 0600), 0);
  auto fifo = SafetensorsFile::Open(PathOf("fifo.safetensors"));  // must not block
  EXPECT_EQ(fifo.status().code(), absl::StatusCode::kInvalidArgument) << fifo.status();
}

// ---------------------------------------------------------------------------------------------
// Truncation and corruption at every byte

class SafetensorsDamageTest : public SafetensorsTest {
 protected:
  std::vector<std::byte> SmallValidFile() {
    const auto a = RandomBytes(6 * 4), b = RandomBytes(5 * 2), c = RandomBytes(3);
    const TensorToWrite tensors[] = {{"a.f32", DType::kF32, {2, 3}, a},
                                     {"b.bf16", DType::kBF16, {5}, b},
                                     {"c.u8", DType::kU8, {3}, c}};
    const std::string path = PathOf("valid.safetensors");
    EXPECT_TRUE(WriteSafetensors(path, tensors, {{"k", "v"}}).ok());
    return ReadFile(path);
  }
};

TEST_F(SafetensorsDamageTest, EveryTruncationIsDataLoss) {
  const auto whole = SmallValidFile();
  ASSERT_TRUE(SafetensorsFile::FromBytes(whole, "whole").ok());
  for (size_t cut = 0; cut < whole.size(); ++cut) {
    SCOPED_TRACE(cut);
    // An exactly sized heap copy, so a read past the cut is a read past the allocation.
    const std::vector<std::byte> prefix(whole.begin(), whole.begin() + static_cast<long>(cut));
    auto view = SafetensorsFile::FromBytes(prefix, "cut");
    ASSERT_FALSE(view.ok());
    EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss) << view.status();
    auto file = OpenRaw("cut.safetensors", prefix);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << file.status();
  }
}

TEST_F(SafetensorsDamageTest, CorruptingAnyByteNeverCrashes) {
  const auto whole = SmallValidFile();
  size_t accepted = 0;
  for (size_t at = 0; at < whole.size(); ++at) {
    for (std::byte value : {std::byte{0x00}, std::byte{0xFF}, std::byte{'"'}, std::byte{'9'},
                            whole[at] ^ std::byte{0x01}}) {
      std::vector<std::byte> damaged = whole;
      damaged[at] = value;
      auto view = SafetensorsFile::FromBytes(damaged, "damaged");
      if (!view.ok()) continue;
      ++accepted;  // e.g. a changed data byte or metadata letter: still a valid file
      for (const TensorInfo& t : (*view)->tensors()) {
        ASSERT_GE(t.data, damaged.data());
        ASSERT_LE(t.data + t.nbytes, damaged.data() + damaged.size());
        ASSERT_EQ(static_cast<size_t>(t.numel()) * DTypeSize(t.dtype), t.nbytes);
      }
    }
  }
  EXPECT_GT(accepted, 0u);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

class CheckpointTest : public SafetensorsTest {
 protected:
  CheckpointTest() : model_dir_(PathOf("model")) { fs::create_directory(model_dir_); }

  // A path inside the model directory.
  std::string M(std::string_view name) const { return (fs::path(model_dir_) / name).string(); }

  // Writes a shard with the named tensors (random F32 [n], n = 1 + index) and remembers the data.
  void WriteShard(std::string_view file_name, const std::vector<std::string>& names) {
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : names) {
      data_[name] = RandomBytes(4 * (1 + data_.size()));
    }
    for (const std::string& name : names) {
      tensors.push_back(
          {name, DType::kF32, {static_cast<int64_t>(data_[name].size() / 4)}, data_[name]});
    }
    ASSERT_TRUE(WriteSafetensors(M(file_name), tensors).ok());
  }

  void WriteIndex(const nlohmann::json& weight_map) {
    const nlohmann::json index = {{"metadata", {{"total_size", 123}}}, {"weight_map", weight_map}};
    WriteText("model.safetensors.index.json", index.dump(1));
  }

  void WriteText(std::string_view name, std::string_view text) {
    WriteFile(M(name), ToBytes(text));
  }

  // The standard three-shard layout; returns the weight map.
  nlohmann::json WriteThreeShards() {
    WriteShard("model-00001-of-00003.safetensors", {"embed_in.weight", "layers.0.a"});
    WriteShard("model-00002-of-00003.safetensors", {"layers.0.b", "layers.1.a", "layers.1.b"});
    WriteShard("model-00003-of-00003.safetensors", {"embed_out.weight"});
    return {{"embed_in.weight", "model-00001-of-00003.safetensors"},
            {"layers.0.a", "model-00001-of-00003.safetensors"},
            {"layers.0.b", "model-00002-of-00003.safetensors"},
            {"layers.1.a", "model-00002-of-00003.safetensors"},
            {"layers.1.b", "model-00002-of-00003.safetensors"},
            {"embed_out.weight", "model-00003-of-00003.safetensors"}};
  }

  // Opens the model directory expecting CODE with every one of PARTS in the message; returns it.
  std::string OpenError(absl::StatusCode code, std::initializer_list<std::string_view> parts) {
    auto checkpoint = Checkpoint::Open(model_dir_);
    EXPECT_FALSE(checkpoint.ok());
    if (checkpoint.ok()) return "";
    EXPECT_EQ(checkpoint.status().code(), code) << checkpoint.status();
    for (std::string_view part : parts) {
      EXPECT_NE(std::string(checkpoint.status().message()).find(part), std::string::npos)
          << "'" << part << "' missing from: " << checkpoint.status();
    }
    return std::string(checkpoint.status().message());
  }

  std::string model_dir_;
  std::map<std::string, std::vector<std::byte>> data_;
};

TEST_F(CheckpointTest, SingleFile) {
  WriteShard("model.safetensors", {"b", "a", "c"});
  auto checkpoint = Checkpoint::Open(model_dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ((*checkpoint)->file_bytes(), fs::file_size(M("model.safetensors")));
  EXPECT_EQ((*checkpoint)->dir(), model_dir_);
  for (const auto& [name, bytes] : data_) {
    const TensorInfo* t = (*checkpoint)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(Span(*t), bytes);
    EXPECT_EQ(t->file, M("model.safetensors"));
  }
  EXPECT_EQ((*checkpoint)->Find("d"), nullptr);
}

TEST_F(CheckpointTest, ShardedWithIndex) {
  WriteIndex(WriteThreeShards());
  auto checkpoint = Checkpoint::Open(model_dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->files().size(), 3u);  // each shard mapped once
  const std::vector<std::string> names = (*checkpoint)->names();
  EXPECT_EQ(names.size(), 6u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  uint64_t total = 0;
  for (int i = 1; i <= 3; ++i) {
    total += fs::file_size(M("model-0000" + std::to_string(i) + "-of-00003.safetensors"));
  }
  EXPECT_EQ((*checkpoint)->file_bytes(), total);
  for (const auto& [name, bytes] : data_) {
    const TensorInfo* t = (*checkpoint)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(Span(*t), bytes) << name;
  }
  EXPECT_EQ((*checkpoint)->Find("layers.1.b")->file, M("model-00002-of-00003.safetensors"));
}

TEST_F(CheckpointTest, TensorsInAShardButNotInTheMapAreIgnored) {
  auto map = WriteThreeShards();
  map.erase("layers.1.b");
  WriteIndex(map);
  auto checkpoint = Checkpoint::Open(model_dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->Find("layers.1.b"), nullptr);
  EXPECT_EQ((*checkpoint)->names().size(), 5u);
}

TEST_F(CheckpointTest, SingleFileWinsOverIndex) {
  WriteIndex(WriteThreeShards());
  WriteShard("model.safetensors", {"only"});
  auto checkpoint = Checkpoint::Open(model_dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->names(), std::vector<std::string>{"only"});
}

TEST_F(CheckpointTest, ShardsMayBeSymlinks) {
  fs::create_directory(M("blobs"));
  WriteShard("blobs/abc123", {"x"});
  fs::create_symlink("blobs/abc123", M("model-00001-of-00001.safetensors"));
  WriteIndex({{"x", "model-00001-of-00001.safetensors"}});
  auto checkpoint = Checkpoint::Open(model_dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(Span(*(*checkpoint)->Find("x")), data_["x"]);
}

TEST_F(CheckpointTest, MissingShardIsNotFoundNamingIndexAndShard) {
  WriteIndex(WriteThreeShards());
  fs::remove(M("model-00002-of-00003.safetensors"));
  OpenError(absl::StatusCode::kNotFound,
            {"model.safetensors.index.json", "model-00002-of-00003.safetensors", "layers.0.b",
             "incomplete"});
}

TEST_F(CheckpointTest, TensorMissingFromItsShardIsNotFoundNamingBoth) {
  auto map = WriteThreeShards();
  map["layers.9.ghost"] = "model-00003-of-00003.safetensors";
  WriteIndex(map);
  OpenError(absl::StatusCode::kNotFound,
            {"'layers.9.ghost'", "model-00003-of-00003.safetensors", "does not contain"});
}

TEST_F(CheckpointTest, RefusesShardNamesThatEscapeTheDirectory) {
  WriteThreeShards();
  // A real file one level up, so an escape would otherwise succeed.
  WriteShard("../escape_target.safetensors", {"escaped"});
  for (const std::string& shard :
       std::vector<std::string>{"../escape_target.safetensors", "sub/x.safetensors", "/etc/passwd",
                                "..", ".", "", std::string("a\0b", 3)}) {
    SCOPED_TRACE(shard);
    auto map = WriteThreeShards();
    map["escaped"] = shard;
    WriteIndex(map);
    OpenError(absl::StatusCode::kInvalidArgument, {"'escaped'", "plain file name"});
  }
}

TEST_F(CheckpointTest, RefusesMalformedIndex) {
  WriteThreeShards();
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  WriteText("model.safetensors.index.json", "{\"weight_map\": ");
  OpenError(kInvalid, {"model.safetensors.index.json", "JSON"});
  WriteText("model.safetensors.index.json", "[]");
  OpenError(kInvalid, {"model.safetensors.index.json", "expected an object"});
  WriteText("model.safetensors.index.json", R"({"metadata":{}})");
  OpenError(kInvalid, {"model.safetensors.index.json", "weight_map"});
  WriteText("model.safetensors.index.json", R"({"weight_map":["a"]})");
  OpenError(kInvalid, {"model.safetensors.index.json", "weight_map"});
  WriteText("model.safetensors.index.json", R"({"weight_map":{}})");
  OpenError(kInvalid, {"model.safetensors.index.json", "no tensors"});
  WriteText("model.safetensors.index.json", R"({"weight_map":{"a":7}})");
  OpenError(kInvalid, {"model.safetensors.index.json", "'a'", "file name"});
  WriteText("model.safetensors.index.json",
            R"({"weight_map":{"a":"x.safetensors","a":"y.safetensors"}})");
  OpenError(kInvalid, {"model.safetensors.index.json", "duplicate key 'a' in 'weight_map'"});
  WriteText("model.safetensors.index.json", "\xEF\xBB\xBF{\"weight_map\":{}}");
  OpenError(kInvalid, {"model.safetensors.index.json", "byte order mark"});
}

TEST_F(CheckpointTest, BrokenShardIsReportedByItsPath) {
  WriteIndex(WriteThreeShards());
  WriteText("model-00003-of-00003.safetensors", "garbage!garbage");
  OpenError(absl::StatusCode::kInvalidArgument, {"model-00003-of-00003.safetensors"});
}

TEST_F(CheckpointTest, MissingWeightsAreNotFoundWithAHint) {
  const std::string message =
      OpenError(absl::StatusCode::kNotFound,
                {"model.safetensors", "model.safetensors.index.json", model_dir_});
  EXPECT_NE(message.find("huggingface"), std::string::npos) << message;
  EXPECT_NE(message.find("pytorch_model.bin"), std::string::npos) << message;
  // pytorch_model.bin is read (engine/format/torch_checkpoint.h), and this one is no zip.
  WriteText("pytorch_model.bin", "pickle");
  OpenError(absl::StatusCode::kInvalidArgument, {"pytorch_model.bin", "not a zip archive"});
  fs::remove(M("pytorch_model.bin"));
  fs::create_symlink("blobs/none", M("model.safetensors"));
  OpenError(absl::StatusCode::kNotFound, {"model.safetensors is a dangling symlink"});

  auto no_dir = Checkpoint::Open(M("nope"));
  EXPECT_EQ(no_dir.status().code(), absl::StatusCode::kNotFound) << no_dir.status();
  EXPECT_NE(no_dir.status().message().find(M("nope")), std::string::npos);
  WriteText("plain_file", "x");
  EXPECT_EQ(Checkpoint::Open(M("plain_file")).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sinkserve
