// TorchCheckpointFile: a torch.save zip read with minizip over the mapped bytes, its data.pkl
// read by the restricted unpickler (see torch_checkpoint.h).
#include "engine/format/torch_checkpoint.h"

#include <minizip/unzip.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <new>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/base/quote.h"
#include "absl/strings/str_join.h"
#include "engine/format/mapped_file.h"
#include "engine/format/pickle.h"

namespace sinkserve {
namespace {

using Kind = PickleValue::Kind;

// A state dict's pickle is a few hundred bytes per tensor; anything near this is hostile (the
// unpickler's arena grows by ~100 bytes per opcode).
constexpr uint64_t kMaxPickleBytes = 16 << 20;
// Deflate cannot expand data more than ~1032 times: a larger claim is a lie (a zip bomb), and
// is refused before anything is allocated for it.
constexpr uint64_t kMaxDeflateRatio = 1032;

// Debian's Abseil has its own string_view type, which std::string_view does not convert to.
absl::string_view Sv(std::string_view text) { return {text.data(), text.size()}; }

// ---------------------------------------------------------------------------------------------
// The zip, through minizip's I/O callbacks over bytes in memory (the mapping).

// True when BYTES end with a whole end-of-central-directory record (22 bytes and its comment).
// minizip settles for the zip64 locator before it, so a file cut inside the record's last
// bytes would pass it; torch (miniz) requires the record, and so does this reader.
bool EndsWithEndOfCentralDirectory(std::span<const std::byte> bytes) {
  constexpr size_t kRecordBytes = 22;
  if (bytes.size() < kRecordBytes) return false;
  const size_t last = bytes.size() - kRecordBytes;
  for (size_t back = 0; back <= std::min<size_t>(last, 0xFFFF); ++back) {
    const std::byte* at = bytes.data() + last - back;
    const auto comment = static_cast<size_t>(at[20]) | static_cast<size_t>(at[21]) << 8;
    if (std::memcmp(at, "PK\x05\x06", 4) == 0 && comment == back) return true;
  }
  return false;
}

struct MemoryStream {
  std::span<const std::byte> bytes;
  uint64_t position = 0;
};

voidpf ZCALLBACK StreamOpen(voidpf opaque, const void*, int) { return opaque; }
uLong ZCALLBACK StreamRead(voidpf, voidpf stream, void* buffer, uLong size) {
  auto* s = static_cast<MemoryStream*>(stream);
  if (s->position >= s->bytes.size()) return 0;
  const uint64_t n = std::min<uint64_t>(size, s->bytes.size() - s->position);
  std::memcpy(buffer, s->bytes.data() + s->position, n);
  s->position += n;
  return static_cast<uLong>(n);
}
uLong ZCALLBACK StreamWrite(voidpf, voidpf, const void*, uLong) { return 0; }
ZPOS64_T ZCALLBACK StreamTell(voidpf, voidpf stream) {
  return static_cast<MemoryStream*>(stream)->position;
}
long ZCALLBACK StreamSeek(voidpf, voidpf stream, ZPOS64_T offset, int origin) {
  auto* s = static_cast<MemoryStream*>(stream);
  uint64_t base = 0;
  if (origin == ZLIB_FILEFUNC_SEEK_CUR) base = s->position;
  if (origin == ZLIB_FILEFUNC_SEEK_END) base = s->bytes.size();
  if (offset > s->bytes.size() || base > s->bytes.size() - offset) return -1;
  s->position = base + offset;
  return 0;
}
int ZCALLBACK StreamClose(voidpf, voidpf) { return 0; }
int ZCALLBACK StreamError(voidpf, voidpf) { return 0; }

struct ZipEntry {
  unz64_file_pos position{};
  uLong method = 0;
  bool encrypted = false;
  uint64_t compressed_bytes = 0;
  uint64_t bytes = 0;  // uncompressed
};

class Zip {
 public:
  ~Zip() {
    if (zip_ != nullptr) unzClose(zip_);
  }

  // Opens BYTES and lists its entries. NAME starts every message.
  absl::Status Open(std::span<const std::byte> bytes, const std::string& name) {
    name_ = &name;
    stream_.bytes = bytes;
    if (!EndsWithEndOfCentralDirectory(bytes)) {
      return absl::DataLossError(absl::StrCat(
          name, ": not a complete zip archive (it does not end with an end of central directory "
                "record: the file is truncated)"));
    }
    zlib_filefunc64_def io{};
    io.zopen64_file = StreamOpen;
    io.zread_file = StreamRead;
    io.zwrite_file = StreamWrite;
    io.ztell64_file = StreamTell;
    io.zseek64_file = StreamSeek;
    io.zclose_file = StreamClose;
    io.zerror_file = StreamError;
    io.opaque = &stream_;
    zip_ = unzOpen2_64(name.c_str(), &io);
    if (zip_ == nullptr) {
      return absl::DataLossError(absl::StrCat(
          name, ": not a complete zip archive (no readable end of central directory: the file "
                "is truncated or damaged)"));
    }
    std::vector<char> entry_name(1 << 16);
    for (int status = unzGoToFirstFile(zip_); status != UNZ_END_OF_LIST_OF_FILE;
         status = unzGoToNextFile(zip_)) {
      if (status != UNZ_OK) return Damaged("its central directory");
      unz_file_info64 info{};
      if (unzGetCurrentFileInfo64(zip_, &info, entry_name.data(), entry_name.size(), nullptr, 0,
                                  nullptr, 0) != UNZ_OK) {
        return Damaged("its central directory");
      }
      ZipEntry entry;
      if (unzGetFilePos64(zip_, &entry.position) != UNZ_OK) return Damaged("its central directory");
      entry.method = info.compression_method;
      entry.encrypted = (info.flag & 1) != 0;
      entry.compressed_bytes = info.compressed_size;
      entry.bytes = info.uncompressed_size;
      std::string key(entry_name.data(), std::min<size_t>(info.size_filename, entry_name.size()));
      if (!entries_.emplace(key, entry).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": the zip holds two entries named ", Quote(key)));
      }
    }
    return absl::OkStatus();
  }

  const std::map<std::string, ZipEntry, std::less<>>& entries() const { return entries_; }

  // The bytes of a stored (uncompressed) entry, in place.
  absl::StatusOr<std::span<const std::byte>> View(std::string_view entry_name,
                                                  const ZipEntry& entry) {
    uint64_t offset = 0;
    if (absl::Status s = Locate(entry_name, entry, &offset); !s.ok()) return s;
    return stream_.bytes.subspan(offset, entry.bytes);
  }

  // The bytes of an entry, stored or deflated, copied out and checked against its CRC-32.
  absl::StatusOr<std::unique_ptr<std::byte[]>> Extract(std::string_view entry_name,
                                                       const ZipEntry& entry) {
    uint64_t offset = 0;
    if (absl::Status s = Locate(entry_name, entry, &offset); !s.ok()) return s;
    std::unique_ptr<std::byte[]> out(new (std::nothrow) std::byte[entry.bytes]);
    if (out == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(*name_, ": entry ", Quote(entry_name),
                                                       ": out of memory for ", entry.bytes,
                                                       " bytes"));
    }
    if (unzOpenCurrentFile(zip_) != UNZ_OK) return Damaged(Quote(entry_name));
    uint64_t done = 0;
    while (done < entry.bytes) {
      const auto chunk = static_cast<unsigned>(std::min<uint64_t>(entry.bytes - done, 1u << 30));
      const int got = unzReadCurrentFile(zip_, out.get() + done, chunk);
      if (got <= 0) break;
      done += static_cast<uint64_t>(got);
    }
    const int closed = unzCloseCurrentFile(zip_);  // UNZ_CRCERROR once everything was read
    if (done != entry.bytes || closed != UNZ_OK) {
      return absl::DataLossError(absl::StrCat(
          *name_, ": entry ", Quote(entry_name), " is damaged (",
          closed == UNZ_CRCERROR ? "CRC-32 mismatch" : "its data ends early", ")"));
    }
    return out;
  }

 private:
  absl::Status Damaged(std::string_view what) const {
    return absl::DataLossError(absl::StrCat(*name_, ": the zip archive is damaged at ", Sv(what)));
  }

  // Checks ENTRY can be read and finds where its data starts in the file.
  absl::Status Locate(std::string_view entry_name, const ZipEntry& entry, uint64_t* offset) {
    auto fail = [&](auto&&... parts) {
      return absl::InvalidArgumentError(
          absl::StrCat(*name_, ": entry ", Quote(entry_name), ": ", parts...));
    };
    if (entry.encrypted) return fail("encrypted");
    if (entry.method != 0 && entry.method != Z_DEFLATED) {
      return fail("compression method ", entry.method, " (only stored and deflate are read)");
    }
    if (entry.method == 0 && entry.compressed_bytes != entry.bytes) {
      return fail("stored, but its sizes differ (", entry.compressed_bytes, " and ", entry.bytes,
                  " bytes)");
    }
    if (entry.method == Z_DEFLATED &&
        entry.bytes / kMaxDeflateRatio > entry.compressed_bytes + 1) {
      return fail("claims to inflate ", entry.compressed_bytes, " bytes to ", entry.bytes,
                  ", more than deflate can");
    }
    if (unzGoToFilePos64(zip_, &entry.position) != UNZ_OK || unzOpenCurrentFile(zip_) != UNZ_OK) {
      return Damaged(Quote(entry_name));
    }
    *offset = unzGetCurrentFileZStreamPos64(zip_);
    unzCloseCurrentFile(zip_);
    const uint64_t size = stream_.bytes.size();
    if (*offset > size || entry.compressed_bytes > size - *offset) {
      return absl::DataLossError(absl::StrCat(
          *name_, ": entry ", Quote(entry_name), ": its ", entry.compressed_bytes,
          " bytes at offset ", *offset, " run past the end of the ", size,
          "-byte file (truncated?)"));
    }
    // Leave the entry selected and unopened, as Extract expects.
    unzGoToFilePos64(zip_, &entry.position);
    return absl::OkStatus();
  }

  const std::string* name_ = nullptr;
  MemoryStream stream_;
  unzFile zip_ = nullptr;
  std::map<std::string, ZipEntry, std::less<>> entries_;
};

// ---------------------------------------------------------------------------------------------
// What data.pkl may name.

struct StorageType {
  std::string_view name;  // in module torch
  DType dtype;
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", DType::kF32}, {"HalfStorage", DType::kF16}, {"BFloat16Storage", DType::kBF16},
    {"DoubleStorage", DType::kF64}, {"LongStorage", DType::kI64}, {"IntStorage", DType::kI32},
    {"ShortStorage", DType::kI16}, {"CharStorage", DType::kI8}, {"ByteStorage", DType::kU8},
    {"BoolStorage", DType::kBool},
};
constexpr char kOrderedDict[] = "collections.OrderedDict";
constexpr char kRebuildTensor[] = "torch._utils._rebuild_tensor_v2";
constexpr char kRebuildParameter[] = "torch._utils._rebuild_parameter";

const std::vector<PickleGlobal>& AllowedGlobals() {
  static const std::vector<PickleGlobal> globals = [] {
    std::vector<PickleGlobal> out = {{"collections", "OrderedDict", true},
                                     {"torch._utils", "_rebuild_tensor_v2", true},
                                     {"torch._utils", "_rebuild_parameter", true}};
    for (const StorageType& type : kStorageTypes) out.push_back({"torch", type.name, false});
    return out;
  }();
  return globals;
}

bool IsCallOf(const Pickle& pickle, const PickleValue& value, std::string_view callable) {
  return value.kind == Kind::kCall && pickle.at(pickle.at(value).items[0]).text == callable;
}

// The integers of a tuple, each >= 0.
bool NonNegativeInts(const Pickle& pickle, const PickleValue& tuple, std::vector<int64_t>* out) {
  if (tuple.kind != Kind::kTuple) return false;
  out->clear();
  for (const PickleValue& item : pickle.at(tuple).items) {
    if (item.kind != Kind::kInt || item.number < 0) return false;
    out->push_back(item.number);
  }
  return true;
}

// One storage: PREFIX/data/KEY, in place or inflated.
struct Storage {
  DType dtype;
  uint64_t numel;
  const std::byte* data;
};

// Turns data.pkl's state dict into TensorInfos over the archive's storages.
class StateDictReader {
 public:
  StateDictReader(const std::string& path, Zip& zip, std::string prefix,
                  std::vector<std::unique_ptr<std::byte[]>>& owned)
      : path_(path), zip_(zip), prefix_(std::move(prefix)), owned_(owned) {}

  absl::Status Read(const Pickle& pickle, std::vector<TensorInfo>* tensors) {
    const PickleValue& root = pickle.root;
    const PickleObject* dict = nullptr;
    if (root.kind == Kind::kDict) {
      dict = &pickle.at(root);
    } else if (IsCallOf(pickle, root, kOrderedDict) &&
               pickle.at(pickle.at(root).items[1]).items.empty()) {
      dict = &pickle.at(root);  // OrderedDict() then SETITEMS; its BUILD state is metadata
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": ", prefix_, "data.pkl holds ", pickle.Describe(root),
          ", not a dict of tensors (a state dict)"));
    }
    std::set<std::string_view> names;
    for (const auto& [key, value] : dict->entries) {
      if (key.kind != Kind::kString) {
        return absl::InvalidArgumentError(absl::StrCat(
            path_, ": the state dict has a key that is ", pickle.Describe(key), ", not a name"));
      }
      const std::string& name = pickle.at(key).text;
      if (!names.insert(name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": tensor ", Quote(name), " appears twice in the state dict"));
      }
      absl::StatusOr<TensorInfo> tensor = ReadTensor(pickle, name, value);
      if (!tensor.ok()) return tensor.status();
      tensors->push_back(*std::move(tensor));
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<TensorInfo> ReadTensor(const Pickle& pickle, const std::string& name,
                                        PickleValue value) {
    const std::string where = absl::StrCat(path_, ": tensor ", Quote(name), ": ");
    auto fail = [&](auto&&... parts) {
      return absl::InvalidArgumentError(absl::StrCat(where, parts...));
    };
    if (IsCallOf(pickle, value, kRebuildParameter)) {  // (tensor, requires_grad, hooks)
      const auto& args = pickle.at(pickle.at(value).items[1]).items;
      if (args.empty()) return fail(kRebuildParameter, " without arguments");
      value = args[0];
    }
    if (!IsCallOf(pickle, value, kRebuildTensor)) {
      return fail("is ", pickle.Describe(value), ", not a tensor (", kRebuildTensor, ")");
    }
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    const auto& args = pickle.at(pickle.at(value).items[1]).items;
    if (args.size() != 6 && args.size() != 7) {
      return fail(kRebuildTensor, " with ", args.size(), " arguments (expected 6 or 7)");
    }
    absl::StatusOr<Storage> storage = ReadStorage(pickle, args[0], where);
    if (!storage.ok()) return storage.status();
    if (args[1].kind != Kind::kInt || args[1].number < 0) {
      return fail("storage offset is ", pickle.Describe(args[1]), ", expected an int >= 0");
    }
    const auto offset = static_cast<uint64_t>(args[1].number);
    std::vector<int64_t> size, stride;
    if (!NonNegativeInts(pickle, args[2], &size)) {
      return fail("size is ", pickle.Describe(args[2]), ", expected a tuple of ints >= 0");
    }
    if (!NonNegativeInts(pickle, args[3], &stride) || stride.size() != size.size()) {
      return fail("stride is ", pickle.Describe(args[3]), ", expected ", size.size(),
                  " ints >= 0");
    }
    const std::string view = absl::StrCat("view (offset ", offset, ", size [",
                                          absl::StrJoin(size, ", "), "], stride [",
                                          absl::StrJoin(stride, ", "), "])");
    const size_t width = DTypeSize(storage->dtype);
    uint64_t numel = 1;
    for (int64_t dim : size) {
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / width) {
        return fail(view, " has more elements than 64 bits count");
      }
    }
    TensorInfo info;
    info.name = name;
    info.dtype = storage->dtype;
    info.shape = size;
    info.nbytes = numel * width;
    info.file = path_;
    info.data = storage->data;
    if (numel == 0) return info;

    // The last element the view reaches must lie inside the storage.
    uint64_t last = offset;
    bool contiguous = true;
    uint64_t expected_stride = 1;
    for (size_t d = size.size(); d-- > 0;) {
      uint64_t reach = 0;
      if (__builtin_mul_overflow(static_cast<uint64_t>(size[d] - 1),
                                 static_cast<uint64_t>(stride[d]), &reach) ||
          __builtin_add_overflow(last, reach, &last)) {
        return fail(view, " reaches past 64-bit element offsets");
      }
      if (size[d] != 1 && static_cast<uint64_t>(stride[d]) != expected_stride) contiguous = false;
      expected_stride *= static_cast<uint64_t>(size[d]);  // <= numel: no overflow
    }
    if (last >= storage->numel) {
      return fail(view, " reaches element ", last, " of its storage, which has ", storage->numel,
                  " elements");
    }
    if (contiguous) {
      info.data = storage->data + offset * width;
      return info;
    }
    // Non-contiguous (a transposed matrix saved as is): copied out in row-major order.
    if (numel > storage->numel) {
      return fail(view, " repeats elements (", numel, " of a ", storage->numel,
                  "-element storage); save tensor.contiguous() instead");
    }
    std::unique_ptr<std::byte[]> copy(new (std::nothrow) std::byte[info.nbytes]);
    if (copy == nullptr) return absl::ResourceExhaustedError(absl::StrCat(where, "out of memory"));
    std::vector<int64_t> index(size.size(), 0);
    uint64_t element = offset;
    for (uint64_t i = 0; i < numel; ++i) {
      std::memcpy(copy.get() + i * width, storage->data + element * width, width);
      for (size_t d = size.size(); d-- > 0;) {
        if (++index[d] < size[d]) {
          element += static_cast<uint64_t>(stride[d]);
          break;
        }
        element -= static_cast<uint64_t>(size[d] - 1) * static_cast<uint64_t>(stride[d]);
        index[d] = 0;
      }
    }
    info.data = copy.get();
    owned_.push_back(std::move(copy));
    return info;
  }

  // A persistent id ('storage', torch.<T>Storage, KEY, location, numel) -> its bytes.
  absl::StatusOr<Storage> ReadStorage(const Pickle& pickle, const PickleValue& value,
                                      const std::string& where) {
    auto fail = [&](auto&&... parts) {
      return absl::InvalidArgumentError(absl::StrCat(where, parts...));
    };
    if (value.kind != Kind::kPersistentId) {
      return fail("storage is ", pickle.Describe(value), ", expected a persistent id");
    }
    const PickleValue& id = pickle.at(value).items[0];
    const std::vector<PickleValue>* fields =
        id.kind == Kind::kTuple ? &pickle.at(id).items : nullptr;
    if (fields == nullptr || fields->size() != 5 || (*fields)[0].kind != Kind::kString ||
        pickle.at((*fields)[0]).text != "storage" || (*fields)[1].kind != Kind::kGlobal ||
        (*fields)[2].kind != Kind::kString || (*fields)[3].kind != Kind::kString ||
        (*fields)[4].kind != Kind::kInt || (*fields)[4].number < 0) {
      return fail("storage id is ", pickle.Describe(id),
                  ", expected ('storage', storage type, key, location, numel)");
    }
    const std::string& type = pickle.at((*fields)[1]).text;
    const StorageType* storage_type = nullptr;
    for (const StorageType& t : kStorageTypes) {
      if (type == absl::StrCat("torch.", Sv(t.name))) storage_type = &t;
    }
    if (storage_type == nullptr) return fail("storage type ", type, " is not a storage type");
    const std::string& key = pickle.at((*fields)[2]).text;
    if (key.empty() || key.find('/') != std::string::npos) {
      return fail("storage key ", Quote(key), " is not a record name");
    }
    const auto numel = static_cast<uint64_t>((*fields)[4].number);

    if (auto it = storages_.find(key); it != storages_.end()) {
      if (it->second.dtype != storage_type->dtype || it->second.numel != numel) {
        return fail("storage ", Quote(key), " is read as ", numel, " elements of ",
                    Sv(DTypeName(storage_type->dtype)), " here and as ", it->second.numel, " of ",
                    Sv(DTypeName(it->second.dtype)), " before");
      }
      return it->second;
    }
    const std::string record = absl::StrCat(prefix_, "data/", key);
    const auto entry = zip_.entries().find(record);
    if (entry == zip_.entries().end()) {
      return fail("storage ", Quote(key), ": the archive has no entry ", Quote(record));
    }
    const size_t width = DTypeSize(storage_type->dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / width || numel * width != entry->second.bytes) {
      return fail("storage ", Quote(key), " of ", numel, " ", Sv(DTypeName(storage_type->dtype)),
                  " elements, but its entry ", Quote(record), " holds ", entry->second.bytes,
                  " bytes");
    }
    Storage storage{storage_type->dtype, numel, nullptr};
    if (entry->second.method == 0) {
      absl::StatusOr<std::span<const std::byte>> bytes = zip_.View(record, entry->second);
      if (!bytes.ok()) return bytes.status();
      storage.data = bytes->data();
    } else {
      absl::StatusOr<std::unique_ptr<std::byte[]>> bytes = zip_.Extract(record, entry->second);
      if (!bytes.ok()) return bytes.status();
      storage.data = bytes->get();
      owned_.push_back(*std::move(bytes));
    }
    storages_.emplace(key, storage);
    return storage;
  }

  const std::string& path_;
  Zip& zip_;
  const std::string prefix_;  // "PREFIX/"
  std::vector<std::unique_ptr<std::byte[]>>& owned_;
  std::map<std::string, Storage> storages_;
};

// The archive's one "PREFIX/data.pkl".
absl::StatusOr<std::string> FindPrefix(const Zip& zip, const std::string& path) {
  constexpr std::string_view kPickle = "/data.pkl";
  std::string prefix;
  for (const auto& [name, entry] : zip.entries()) {
    const std::string_view n = name;
    if (n.size() <= kPickle.size() || n.substr(n.size() - kPickle.size()) != kPickle) continue;
    const std::string_view candidate = n.substr(0, n.size() - kPickle.size() + 1);
    if (candidate.find('/') != candidate.size() - 1) continue;
    if (!prefix.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the zip holds two pickles, ",
                                                     Quote(prefix + "data.pkl"), " and ",
                                                     Quote(name)));
    }
    prefix = candidate;
  }
  if (prefix.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": a zip archive without a DIR/data.pkl entry: not a torch.save checkpoint"));
  }
  return prefix;
}

}  // namespace

TorchCheckpointFile::~TorchCheckpointFile() = default;

absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> TorchCheckpointFile::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> mapping = MappedFile::Open(path);
  if (!mapping.ok()) return mapping.status();
  absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> file = FromBytes((*mapping)->bytes(), path);
  if (file.ok()) (*file)->mapping_ = *std::move(mapping);
  return file;
}

absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> TorchCheckpointFile::FromBytes(
    std::span<const std::byte> bytes, std::string name) {
  std::unique_ptr<TorchCheckpointFile> file(new TorchCheckpointFile());
  file->path_ = std::move(name);
  file->bytes_ = bytes;
  if (absl::Status status = file->Parse(); !status.ok()) return status;
  return file;
}

absl::Status TorchCheckpointFile::Parse() {
  const std::string_view head(reinterpret_cast<const char*>(bytes_.data()),
                              std::min<size_t>(bytes_.size(), 4));
  if (head != std::string_view("PK\x03\x04", 4)) {
    if (!head.empty() && head[0] == '\x80') {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": the legacy torch.save format (torch < 1.6, or "
                 "_use_new_zipfile_serialization=False), which sinkserve does not read: save it "
                 "again with a newer torch, or convert it to safetensors"));
    }
    if (bytes_.size() < 4 && std::string_view("PK\x03\x04", 4).starts_with(head)) {
      return absl::DataLossError(absl::StrCat(path_, ": ", bytes_.size(),
                                              " bytes: a truncated zip archive"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ": not a zip archive, so not a torch.save checkpoint (those start with PK)"));
  }
  Zip zip;
  if (absl::Status s = zip.Open(bytes_, path_); !s.ok()) return s;
  absl::StatusOr<std::string> prefix = FindPrefix(zip, path_);
  if (!prefix.ok()) return prefix.status();

  if (auto order = zip.entries().find(*prefix + "byteorder"); order != zip.entries().end()) {
    if (order->second.bytes > 16) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": ", *prefix, "byteorder is ",
                                                     order->second.bytes, " bytes long"));
    }
    absl::StatusOr<std::unique_ptr<std::byte[]>> text = zip.Extract(order->first, order->second);
    if (!text.ok()) return text.status();
    const std::string_view value(reinterpret_cast<const char*>(text->get()), order->second.bytes);
    if (value != "little") {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": saved with byte order ",
                                                     Quote(value), "; sinkserve reads little"));
    }
  }

  const std::string pickle_name = *prefix + "data.pkl";
  const ZipEntry& pickle_entry = zip.entries().find(pickle_name)->second;
  if (pickle_entry.bytes > kMaxPickleBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", pickle_name, " is ",
                                                   pickle_entry.bytes, " bytes, over the ",
                                                   kMaxPickleBytes, "-byte limit"));
  }
  absl::StatusOr<std::unique_ptr<std::byte[]>> pickle_bytes =
      zip.Extract(pickle_name, pickle_entry);
  if (!pickle_bytes.ok()) return pickle_bytes.status();
  absl::StatusOr<Pickle> pickle = Unpickle(
      std::string_view(reinterpret_cast<const char*>(pickle_bytes->get()), pickle_entry.bytes),
      absl::StrCat(path_, ": ", pickle_name), AllowedGlobals());
  if (!pickle.ok()) return pickle.status();

  StateDictReader reader(path_, zip, *prefix, owned_);
  if (absl::Status s = reader.Read(*pickle, &tensors_); !s.ok()) return s;
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return absl::OkStatus();
}

const TensorInfo* TorchCheckpointFile::Find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

bool TorchCheckpointFile::InFile(const std::byte* data) const {
  const std::less<const std::byte*> before;
  return !bytes_.empty() && !before(data, bytes_.data()) &&
         before(data, bytes_.data() + bytes_.size());
}

}  // namespace sinkserve
