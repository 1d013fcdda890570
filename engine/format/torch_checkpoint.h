// Reader for PyTorch checkpoints written by torch.save (`pytorch_model.bin`), without Python.
//
// Since torch 1.6 the file is a zip archive (entries stored, not compressed, each aligned to
// 64 bytes) of one directory PREFIX/ (the file's stem, e.g. "pytorch_model/" or "archive/"):
//   PREFIX/data.pkl       a pickle of the saved object: for a state dict, a dict (or
//                         collections.OrderedDict) of name -> tensor
//   PREFIX/data/KEY       the raw bytes of storage KEY, little-endian, numel * element size
//   PREFIX/byteorder      "little" (torch >= 2.1); other records (version, .format_version,
//                         .storage_alignment, .data/serialization_id) are not needed here.
// Each tensor in data.pkl is torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
// stride, requires_grad, backward_hooks[, metadata]) (or _rebuild_parameter(tensor, ...)
// around it), its storage a persistent id ('storage', torch.<T>Storage, KEY, location, numel).
//
// The pickle is read by the restricted unpickler (pickle.h), which runs nothing: only the
// globals above and collections.OrderedDict may appear, and everything else, a global like
// posix.system included, is refused with the file, byte offset and name. The zip is read with
// minizip over the mapped file. A stored (uncompressed) storage is viewed in place; a
// deflated one is inflated into memory this object owns (zip tools may recompress).
//
// Tensors: the dtypes of dtype.h (Float, Half, BFloat16, Double, Long, Int, Short, Char, Byte,
// Bool storages). A view must lie inside its storage (else INVALID_ARGUMENT naming the
// tensor). Two tensors may share a storage (tied weights, views at offsets). A contiguous view
// points into the storage; a non-contiguous one (a transposed matrix saved as is) is copied
// into a contiguous buffer, which is refused when it would be larger than its storage (a
// broadcast view) so memory stays bounded by the file.
//
// Refused with the reason: the pre-1.6 format (a bare pickle), a big-endian file, compression
// other than stored/deflate, encryption, duplicate zip entries or tensor names, a top-level
// object that is not a dict of tensors, an entry or view that runs past the end of the file
// (DATA_LOSS: truncated). Every message starts with the file name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/safetensors.h"

namespace sinkserve {

class TorchCheckpointFile {
 public:
  // Maps and reads PATH. NOT_FOUND when it does not exist.
  static absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> Open(const std::string& path);
  // Reads bytes the caller keeps alive (the fuzzer, tests); NAME stands in for the path.
  static absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> FromBytes(
      std::span<const std::byte> bytes, std::string name);

  TorchCheckpointFile(const TorchCheckpointFile&) = delete;
  TorchCheckpointFile& operator=(const TorchCheckpointFile&) = delete;
  ~TorchCheckpointFile();

  // Sorted by name; contiguous, row-major, as TensorInfo promises.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr if absent. O(log n).
  const TensorInfo* Find(std::string_view name) const;
  const std::string& path() const { return path_; }
  uint64_t size_bytes() const { return bytes_.size(); }
  // True when DATA points into the file's bytes, false for the copies this object owns.
  bool InFile(const std::byte* data) const;

 private:
  TorchCheckpointFile() = default;
  absl::Status Parse();

  std::string path_;
  std::unique_ptr<MappedFile> mapping_;  // when this object owns a mapping (Open)
  std::span<const std::byte> bytes_;     // the whole file
  std::vector<std::unique_ptr<std::byte[]>> owned_;  // inflated storages, contiguous copies
  std::vector<TensorInfo> tensors_;
};

}  // namespace sinkserve
