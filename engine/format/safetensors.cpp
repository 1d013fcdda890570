// Safetensors reader: mmap, header validation (see safetensors.h for the rules), sharded
// checkpoints, and a writer for tests and tools.
#include "engine/format/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/quote.h"
#include "common/base/strict_json.h"
#include "common/base/utf8.h"
#include "engine/format/mapped_file.h"
#include "engine/format/torch_checkpoint.h"
#include "nlohmann/json.hpp"

namespace sinkserve {
namespace {

using Json = nlohmann::json;

constexpr size_t kLengthPrefixBytes = 8;
constexpr char kMetadataKey[] = "__metadata__";

// Debian's Abseil has its own string_view type, which std::string_view does not convert to.
absl::string_view Sv(std::string_view text) { return {text.data(), text.size()}; }

// ---------------------------------------------------------------------------------------------
// Messages. Names come from untrusted files: quoted (common/base/quote.h) and cut to a sane
// length, so an error message can neither be 100 MB long nor carry terminal control bytes.

std::string Cut(std::string_view text, size_t max_bytes = 200) {
  if (text.size() <= max_bytes) return std::string(text);
  return absl::StrCat(Sv(text.substr(0, max_bytes)), "...");
}

// ---------------------------------------------------------------------------------------------
// JSON values.

std::optional<uint64_t> AsUnsigned(const Json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  return std::nullopt;
}

// "an array", "an object", "a string", or the literal of a scalar ("-1", "1.5", "null").
std::string Describe(const Json& value) {
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  if (value.is_string()) return "a string";
  return Cut(value.dump(), 40);
}

// Safetensors dtypes that are valid in the format but that sinkserve does not read; they get a
// clearer message than a misspelled dtype.
bool IsKnownUnsupportedDType(std::string_view name) {
  constexpr std::string_view kOthers[] = {"U16",     "U32",     "U64", "C64",     "F8_E5M2",
                                          "F8_E4M3", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2"};
  return std::find(std::begin(kOthers), std::end(kOthers), name) != std::end(kOthers);
}

// ---------------------------------------------------------------------------------------------
// Header entries.

// One tensor entry as the header states it, before its bytes are located.
struct HeaderEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

// Validates one tensor entry of the header. PREFIX is "FILE: tensor 'NAME': ".
absl::StatusOr<HeaderEntry> ParseEntry(const std::string& prefix, const std::string& name,
                                       const Json& entry) {
  auto fail = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, parts...));
  };
  if (!entry.is_object()) {
    return fail("entry is ", Describe(entry),
                ", expected an object with dtype, shape and data_offsets");
  }
  HeaderEntry out{name, DType::kF32, {}, 0, 0};

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) return fail("missing \"dtype\"");
  if (!dtype_it->is_string()) {
    return fail("\"dtype\" is ", Describe(*dtype_it), ", expected a string");
  }
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<DType> dtype = ParseDType(dtype_name);
  if (!dtype) {
    if (IsKnownUnsupportedDType(dtype_name)) {
      return fail("dtype ", Quote(dtype_name),
                  " is not supported (sinkserve reads F32, F16, BF16, F64, I8, U8, I16, I32, I64, "
                  "BOOL)");
    }
    return fail("unknown dtype ", Quote(dtype_name));
  }
  out.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return fail("missing \"shape\"");
  if (!shape_it->is_array()) {
    return fail("\"shape\" is ", Describe(*shape_it), ", expected an array");
  }
  // numel must fit int64 at every step of the product, in order, so that TensorInfo::numel()
  // (an int64 product in the same order) can never overflow. A zero dim does not excuse an
  // overflow before it, as in the official lib (checked_mul in order).
  uint64_t numel = 1;
  out.shape.reserve(shape_it->size());
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const Json& dim_json = (*shape_it)[i];
    const std::optional<uint64_t> dim = AsUnsigned(dim_json);
    if (!dim) {
      return fail("shape[", i, "] is ", Describe(dim_json), ", expected a non-negative integer");
    }
    constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (*dim > kMax || (*dim != 0 && numel > kMax / *dim)) {
      return fail("shape ", Cut(shape_it->dump(), 80), " has more elements than int64 holds");
    }
    numel *= *dim;
    out.shape.push_back(static_cast<int64_t>(*dim));
  }

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) return fail("missing \"data_offsets\"");
  const Json& offsets = *offsets_it;
  std::optional<uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = AsUnsigned(offsets[0]);
    end = AsUnsigned(offsets[1]);
  }
  if (!begin || !end) {
    return fail("\"data_offsets\" is ", Cut(offsets.dump(), 80),
                ", expected [begin, end] of two non-negative integers");
  }
  if (*begin > *end) {
    return fail("data_offsets [", *begin, ", ", *end, "] end before they begin");
  }
  out.begin = *begin;
  out.end = *end;

  const size_t element_bytes = DTypeSize(out.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / element_bytes) {
    return fail("shape ", Cut(shape_it->dump(), 80), " of ", Sv(DTypeName(out.dtype)),
                " needs more bytes than 64 bits count");
  }
  const uint64_t nbytes = numel * element_bytes;
  if (nbytes != out.end - out.begin) {
    return fail("shape ", Cut(shape_it->dump(), 80), " of ", Sv(DTypeName(out.dtype)), " needs ",
                nbytes, " bytes but data_offsets [", out.begin, ", ", out.end, "] span ",
                out.end - out.begin);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TensorInfo

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

bool TensorInfo::IsAlignedFor() const {
  return reinterpret_cast<uintptr_t>(data) % DTypeSize(dtype) == 0;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> mapping = MappedFile::Open(path);
  if (!mapping.ok()) return mapping.status();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = FromBytes((*mapping)->bytes(), path);
  if (file.ok()) (*file)->mapping_ = *std::move(mapping);
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::span<const std::byte> bytes, std::string name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  file->bytes_ = bytes;
  if (absl::Status status = file->Parse(); !status.ok()) return status;
  return file;
}

absl::Status SafetensorsFile::Parse() {
  const uint64_t size = bytes_.size();
  if (size < kLengthPrefixBytes) {
    return absl::DataLossError(absl::StrCat(
        path_, ": file is ", size, " bytes, shorter than the 8-byte header length prefix"));
  }
  uint64_t header_bytes = 0;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {  // little-endian, whatever the host is
    header_bytes |= static_cast<uint64_t>(bytes_[i]) << (8 * i);
  }
  if (header_bytes > kSafetensorsMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": header length ", header_bytes,
                                                   " is over the ", kSafetensorsMaxHeaderBytes,
                                                   "-byte limit (not a safetensors file?)"));
  }
  if (header_bytes > size - kLengthPrefixBytes) {
    return absl::DataLossError(absl::StrCat(path_, ": header length ", header_bytes,
                                            " runs past the end of the ", size,
                                            "-byte file (truncated?)"));
  }
  const size_t data_start = kLengthPrefixBytes + header_bytes;
  const uint64_t data_bytes = size - data_start;
  const std::string_view header_text(
      reinterpret_cast<const char*>(bytes_.data()) + kLengthPrefixBytes, header_bytes);

  absl::StatusOr<Json> parsed = ParseStrictJson(header_text, absl::StrCat(path_, ": header"));
  if (!parsed.ok()) return parsed.status();
  const Json& header = *parsed;
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": header is ", Describe(header), ", expected an object"));
  }

  std::vector<HeaderEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (value.is_null()) continue;  // the official lib reads it as an Option
      if (!value.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": \"__metadata__\" is ", Describe(value), ", expected an object"));
      }
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(path_, ": \"__metadata__\" value of ",
                                                         Quote(key), " is ", Describe(text),
                                                         ", expected a string"));
        }
        metadata_.emplace(key, text.get<std::string>());
      }
      continue;
    }
    absl::StatusOr<HeaderEntry> entry =
        ParseEntry(absl::StrCat(path_, ": tensor ", Quote(name), ": "), name, value);
    if (!entry.ok()) return entry.status();
    entries.push_back(*std::move(entry));
  }

  // The official lib's rule: sorted by offsets, the tensors tile the data area with neither
  // overlap nor gap, starting at 0 and ending at the end of the file.
  std::vector<size_t> by_offset(entries.size());
  for (size_t i = 0; i < by_offset.size(); ++i) by_offset[i] = i;
  std::sort(by_offset.begin(), by_offset.end(), [&](size_t a, size_t b) {
    return std::tie(entries[a].begin, entries[a].end) < std::tie(entries[b].begin, entries[b].end);
  });
  uint64_t covered = 0;  // the data area [0, covered) belongs to the tensors seen so far
  const HeaderEntry* previous = nullptr;
  for (size_t index : by_offset) {
    const HeaderEntry& e = entries[index];
    if (e.begin < covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor ", Quote(e.name), ": data_offsets [", e.begin, ", ", e.end,
                       "] overlap tensor ", Quote(previous->name), " at [", previous->begin, ", ",
                       previous->end, "]"));
    }
    if (e.begin > covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor ", Quote(e.name), ": data_offsets [", e.begin, ", ", e.end,
                       "] leave bytes [", covered, ", ", e.begin,
                       ") of the data area unused; tensors must be contiguous"));
    }
    if (e.end > data_bytes) {
      return absl::DataLossError(absl::StrCat(path_, ": tensor ", Quote(e.name), ": data_offsets [",
                                              e.begin, ", ", e.end, "] run past the ", data_bytes,
                                              "-byte data area (file truncated?)"));
    }
    covered = e.end;
    previous = &e;
  }
  if (covered != data_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", data_bytes - covered,
                                                   " bytes after the last tensor at data "
                                                   "offset ",
                                                   covered, " belong to no tensor"));
  }

  const std::byte* data_area = bytes_.data() + data_start;
  tensors_.reserve(entries.size());
  for (HeaderEntry& e : entries) {
    TensorInfo info;
    info.name = std::move(e.name);
    info.dtype = e.dtype;
    info.shape = std::move(e.shape);
    info.data = data_area + e.begin;  // begin <= end <= data_bytes: in range (or one past)
    info.nbytes = static_cast<size_t>(e.end - e.begin);
    info.file = path_;
    tensors_.push_back(std::move(info));
  }
  // Names are unique (duplicate JSON keys were refused), so Find can binary-search.
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return absl::OkStatus();
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

namespace fs = std::filesystem;

constexpr char kSingleFileName[] = "model.safetensors";
constexpr char kIndexFileName[] = "model.safetensors.index.json";
constexpr char kTorchFileName[] = "pytorch_model.bin";
constexpr char kTorchIndexFileName[] = "pytorch_model.bin.index.json";

bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

// An index file's weight_map, as shard file name -> the tensors it puts there.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ReadWeightMap(
    const std::string& index_path) {
  absl::StatusOr<std::string> index_text = ReadFile(index_path, {.max_bytes = kSafetensorsMaxIndexBytes, .regular_file_only = true});
  if (!index_text.ok()) return index_text.status();
  absl::StatusOr<Json> parsed = ParseStrictJson(*index_text, index_path);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": holds ", Describe(*parsed), ", expected an object"));
  }
  const auto map_it = parsed->find("weight_map");
  if (map_it == parsed->end()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing \"weight_map\""));
  }
  if (!map_it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": \"weight_map\" is ", Describe(*map_it),
                     ", expected an object of tensor name -> shard file name"));
  }
  if (map_it->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": \"weight_map\" names no tensors"));
  }
  std::map<std::string, std::vector<std::string>> tensors_per_shard;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor ", Quote(tensor),
                                                     ": shard is ", Describe(shard),
                                                     ", expected a file name"));
    }
    const auto& shard_name = shard.get_ref<const std::string&>();
    if (!IsPlainFileName(shard_name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": tensor ", Quote(tensor), ": shard ", Quote(shard_name),
                       " is not a plain file name inside the model directory"));
    }
    tensors_per_shard[shard_name].push_back(tensor);
  }
  return tensors_per_shard;
}

// Opens DIR/FILE_NAME (a SafetensorsFile or a TorchCheckpointFile) and names all its tensors.
template <typename File>
absl::Status OpenSingle(const fs::path& root, const char* file_name,
                        std::vector<std::unique_ptr<File>>& files,
                        std::map<std::string, const TensorInfo*, std::less<>>& by_name) {
  absl::StatusOr<std::unique_ptr<File>> file = File::Open((root / file_name).string());
  if (!file.ok()) return file.status();
  for (const TensorInfo& t : (*file)->tensors()) by_name.emplace(t.name, &t);
  files.push_back(*std::move(file));
  return absl::OkStatus();
}

// Opens the shards DIR/INDEX_NAME names and the tensors it maps to each.
template <typename File>
absl::Status OpenShards(const fs::path& root, const char* index_name,
                        std::vector<std::unique_ptr<File>>& files,
                        std::map<std::string, const TensorInfo*, std::less<>>& by_name) {
  const std::string index_path = (root / index_name).string();
  absl::StatusOr<std::map<std::string, std::vector<std::string>>> tensors_per_shard =
      ReadWeightMap(index_path);
  if (!tensors_per_shard.ok()) return tensors_per_shard.status();
  for (const auto& [shard_name, tensors] : *tensors_per_shard) {
    const std::string shard_path = (root / shard_name).string();
    absl::StatusOr<std::unique_ptr<File>> file = File::Open(shard_path);
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(absl::StrCat(
          index_path, " maps tensor ", Quote(tensors.front()),
          tensors.size() > 1 ? absl::StrCat(" and ", tensors.size() - 1, " others") : "",
          " to shard ", Quote(shard_name), ", but ", shard_path,
          " does not exist; the download is incomplete: fetch every shard the index names"));
    }
    if (!file.ok()) return file.status();
    for (const std::string& tensor : tensors) {
      const TensorInfo* info = (*file)->Find(tensor);
      if (info == nullptr) {
        return absl::NotFoundError(absl::StrCat(index_path, " maps tensor ", Quote(tensor),
                                                " to shard ", shard_path,
                                                ", which does not contain it"));
      }
      by_name.emplace(tensor, info);
    }
    files.push_back(*std::move(file));
  }
  return absl::OkStatus();
}

}  // namespace

Checkpoint::~Checkpoint() = default;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::error_code ec;
  const fs::path root(dir);
  const fs::file_status dir_status = fs::status(root, ec);
  if (!fs::exists(dir_status)) {
    return absl::NotFoundError(
        absl::StrCat("model directory ", dir,
                     " does not exist; pass a Hugging Face model directory "
                     "(config.json, tokenizer.json and model.safetensors or its sharded form)"));
  }
  if (!fs::is_directory(dir_status)) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, " is not a directory; pass the Hugging Face model directory that holds it"));
  }

  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->dir_ = dir;
  auto exists = [&](const char* name) { return fs::exists(fs::status(root / name, ec)); };
  absl::Status status;
  if (exists(kSingleFileName)) {
    status = OpenSingle(root, kSingleFileName, checkpoint->files_, checkpoint->by_name_);
  } else if (exists(kIndexFileName)) {
    status = OpenShards(root, kIndexFileName, checkpoint->files_, checkpoint->by_name_);
  } else if (exists(kTorchFileName)) {
    status = OpenSingle(root, kTorchFileName, checkpoint->torch_files_, checkpoint->by_name_);
  } else if (exists(kTorchIndexFileName)) {
    status = OpenShards(root, kTorchIndexFileName, checkpoint->torch_files_, checkpoint->by_name_);
  } else {
    std::string hint =
        "; pass a Hugging Face model directory with its weights (e.g. from "
        "`huggingface-cli download EleutherAI/pythia-160m`)";
    for (const char* name : {kSingleFileName, kIndexFileName, kTorchFileName}) {
      if (fs::exists(fs::symlink_status(root / name, ec))) {
        hint = absl::StrCat("; ", name, " is a dangling symlink (incomplete download?)");
      }
    }
    return absl::NotFoundError(absl::StrCat("no ", kSingleFileName, ", ", kIndexFileName, ", ",
                                            kTorchFileName, " or ", kTorchIndexFileName, " in ",
                                            dir, hint));
  }
  if (!status.ok()) return status;
  return checkpoint;
}

const TensorInfo* Checkpoint::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [name, info] : by_name_) out.push_back(name);
  return out;
}

uint64_t Checkpoint::file_bytes() const {
  uint64_t total = 0;
  for (const auto& file : files_) total += file->size_bytes();
  for (const auto& file : torch_files_) total += file->size_bytes();
  return total;
}

bool Checkpoint::IsMapped(const std::byte* data) const {
  for (const auto& file : files_) {
    for (const TensorInfo& tensor : file->tensors()) {
      if (tensor.data == data) return true;
    }
  }
  for (const auto& file : torch_files_) {
    if (file->InFile(data)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Writer

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto fail = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts...));
  };
  // Layout like the official writer: decreasing element size, then name, so that every tensor
  // starts aligned to its element size once the data area is 8-byte aligned.
  std::vector<const TensorToWrite*> order;
  order.reserve(tensors.size());
  std::set<std::string_view> seen;
  for (const TensorToWrite& t : tensors) {
    if (t.name == kMetadataKey) return fail("tensor name \"__metadata__\" is reserved");
    if (!utf8::Validate(t.name).ok()) return fail("tensor name ", Quote(t.name), " is not UTF-8");
    if (!seen.insert(t.name).second) return fail("duplicate tensor name ", Quote(t.name));
    uint64_t numel = 1;
    for (int64_t dim : t.shape) {
      if (dim < 0) return fail("tensor ", Quote(t.name), ": negative dim ", dim);
      const auto d = static_cast<uint64_t>(dim);
      if (d != 0 && numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / d) {
        return fail("tensor ", Quote(t.name), ": too many elements");
      }
      numel *= d;
    }
    if (numel > std::numeric_limits<uint64_t>::max() / DTypeSize(t.dtype) ||
        numel * DTypeSize(t.dtype) != t.data.size()) {
      return fail("tensor ", Quote(t.name), ": ", t.data.size(), " bytes of data for ", numel,
                  " elements of ", Sv(DTypeName(t.dtype)));
    }
    order.push_back(&t);
  }
  for (const auto& [key, value] : metadata) {
    if (!utf8::Validate(key).ok() || !utf8::Validate(value).ok()) {
      return fail("metadata entry ", Quote(key), " is not UTF-8");
    }
  }
  std::sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    const size_t sa = DTypeSize(a->dtype), sb = DTypeSize(b->dtype);
    if (sa != sb) return sa > sb;
    return a->name < b->name;
  });

  Json header = Json::object();  // std::map-backed: keys come out sorted by name
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    header[t->name] = {{"dtype", std::string(DTypeName(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data area 8-byte aligned

  const std::string tmp_path = path + ".tmp";
  std::FILE* out = std::fopen(tmp_path.c_str(), "wb");
  if (out == nullptr) return ErrnoError(errno, absl::StrCat(tmp_path, ": cannot create"));
  unsigned char prefix[kLengthPrefixBytes];
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {
    prefix[i] = static_cast<unsigned char>(static_cast<uint64_t>(header_text.size()) >> (8 * i));
  }
  errno = 0;
  bool ok = std::fwrite(prefix, 1, sizeof(prefix), out) == sizeof(prefix) &&
            std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size();
  for (const TensorToWrite* t : order) {
    if (!ok) break;
    ok = t->data.empty() || std::fwrite(t->data.data(), 1, t->data.size(), out) == t->data.size();
  }
  int write_errno = errno;
  if (std::fclose(out) != 0 && ok) {
    ok = false;
    write_errno = errno;
  }
  if (!ok) {
    std::remove(tmp_path.c_str());
    return ErrnoError(write_errno, absl::StrCat(tmp_path, ": write failed"));
  }
  if (std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return ErrnoError(err, absl::StrCat(path, ": cannot rename ", tmp_path, " to it"));
  }
  return absl::OkStatus();
}

}  // namespace sinkserve
