// Reader for Hugging Face safetensors checkpoints.
//
// File format: [u64 little-endian N][N bytes of UTF-8 JSON header][data area].
// The header maps tensor name -> {"dtype": "F32", "shape": [d0, d1, ...],
// "data_offsets": [begin, end]} (offsets relative to the data area) plus an optional
// "__metadata__" object of string -> string.
//
// Files are untrusted input. The reader accepts exactly what the official Rust library
// (huggingface/safetensors, `Metadata::validate` + `read_metadata`) accepts, except
//   - dtypes that sinkserve does not read (U16, U32, U64, C64, F8_*, F4, F6_*: see dtype.h),
//   - duplicate keys in any JSON object (serde keeps one silently; two readers could then
//     disagree about the same file), and
//   - JSON nested deeper than kMaxJsonDepth = 64 levels (a legitimate header nests 3 deep);
// both are the rules of common/base/strict_json.h, which parses the header and the index.
// This was checked by feeding thousands of fuzzed and structurally mutated files to both
// readers: these three are the only disagreements. Every failure is an absl::Status whose
// message starts with the file name and names the tensor where there is one (names escaped and
// cut to 120 bytes); nothing is trusted before it is checked. No allocation is sized by a number
// read from the file: memory is bounded by a constant times the header bytes actually present,
// and the header is capped at 100 MB like the official lib.
//
// Rules enforced (code in parentheses):
//   - file >= 8 bytes; 8 + N <= file size (DATA_LOSS, the file is cut short)
//   - N <= 100,000,000 like the official lib (INVALID_ARGUMENT)
//   - header is UTF-8, one JSON object (no BOM, no NUL; trailing spaces are the official
//     padding), no duplicate keys at any level, depth <= 64 (ParseStrictJson)
//   - each tensor entry is an object with "dtype" (string), "shape" (array of non-negative
//     integers), "data_offsets" (array of exactly two non-negative integers; like serde's u64,
//     "-0", "1.0" and "1e3" are not integers); other keys in an entry are ignored, as the
//     official lib ignores them
//   - dtype is one of DType's spellings; numel (and every partial product of the dims, in order)
//     fits int64; numel * DTypeSize fits size_t and equals end - begin
//   - sorted by (begin, end), the tensors tile the data area exactly: the first starts at 0,
//     each starts where the previous one ended, and the last ends at the end of the file.
//     A tensor that ends past the end of the file is DATA_LOSS (truncated file); overlaps, gaps
//     and trailing bytes are INVALID_ARGUMENT. Zero-sized tensors may share an offset.
//   - "__metadata__" is null or an object of string -> string
// Not required: alignment. Files written by the official lib (and by the tests' WriteSafetensors)
// put tensors in order of decreasing element size after an 8-byte-aligned header, so every tensor
// is aligned to its element size in an mmap; other writers need not, so TensorInfo::data may be
// misaligned for its dtype. Read through memcpy or check IsAlignedFor() before casting.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/dtype.h"

namespace sinkserve {

// The official library's header cap; a larger header is rejected before it is read.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
// An index file (model.safetensors.index.json) larger than this is rejected before it is read.
inline constexpr uint64_t kSafetensorsMaxIndexBytes = 100'000'000;

// One tensor of a checkpoint: a view into a mapped file, never a copy.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;       // row-major, outermost first; empty for a scalar
  const std::byte* data = nullptr;  // points into the mmapped file; valid while the owner lives;
                                    // may be misaligned for dtype (see the file comment)
  size_t nbytes = 0;                // == numel() * DTypeSize(dtype)
  std::string file;                 // path of the file that holds it (for error messages)

  // Product of shape (1 for a scalar). The reader guarantees it fits int64 for every tensor it
  // returns.
  int64_t numel() const;
  // True when data is aligned to DTypeSize(dtype), i.e. it may be read through a T*.
  bool IsAlignedFor() const;
};

// One .safetensors file, mapped read-only (PROT_READ, MAP_PRIVATE). The fd is closed as soon as
// the mapping exists; the mapping is released by the destructor. If another process truncates
// the file while it is mapped, touching the lost pages raises SIGBUS: checkpoints are expected
// to be immutable while the server runs.
class SafetensorsFile {
 public:
  // Maps and validates PATH. NOT_FOUND when it does not exist; INVALID_ARGUMENT when it is not a
  // regular file (a directory, a FIFO: it is opened O_NONBLOCK so a FIFO cannot hang us).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses bytes the caller keeps alive (used by the fuzzer and tests); no copy. NAME stands in
  // for the path in messages and TensorInfo::file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(
      std::span<const std::byte> bytes, std::string name);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  // Sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr if absent. O(log n).
  const TensorInfo* Find(std::string_view name) const;
  // The header's "__metadata__" (empty when absent or null).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The path given to Open, or the name given to FromBytes.
  const std::string& path() const { return path_; }
  // Size of the file (or of the bytes given to FromBytes).
  uint64_t size_bytes() const { return bytes_.size(); }

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string path_;
  std::span<const std::byte> bytes_;  // the whole file
  void* mapping_ = nullptr;           // mmap base when this object owns a mapping
  size_t mapping_bytes_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The tensors of a Hugging Face model directory.
//
// Layout, checked in this order (as transformers does):
//   1. DIR/model.safetensors: one file, all its tensors.
//   2. DIR/model.safetensors.index.json: {"weight_map": {tensor name: shard file name}, ...}.
//      Other top-level keys ("metadata" with "total_size") are ignored. Each shard is mapped
//      once however many tensors name it. Shard names must be plain file names inside DIR
//      (no '/', not "." or "..", no NUL); a shard may be a symlink (the Hugging Face cache is
//      made of them). The weight_map is authoritative: a tensor it names must be in its shard
//      (else NOT_FOUND naming both), and a tensor present in a shard but absent from the map is
//      ignored (not visible through Find/names), so a stray tensor cannot shadow a mapped one.
// Missing files are NOT_FOUND with a message saying what was looked for and what to do.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;
  ~Checkpoint();

  // nullptr if absent.
  const TensorInfo* Find(std::string_view name) const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  // Total bytes of the files mapped.
  uint64_t file_bytes() const;
  const std::string& dir() const { return dir_; }
  // The mapped files: model.safetensors alone, or the shards in file-name order.
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  Checkpoint() = default;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;  // into files_
};

}  // namespace sinkserve
