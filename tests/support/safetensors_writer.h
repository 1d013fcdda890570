// WriteSafetensors: writes the files the safetensors tests read back. Tests only: sinkserve
// reads checkpoints, never writes them.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/base/dtype.h"

namespace sinkserve {

// Writes a .safetensors file like the official library: header JSON with keys sorted by name,
// padded with spaces so the data area starts 8-byte aligned; data laid out by decreasing
// element size, then name, so every tensor is aligned to its element size. Writes PATH.tmp
// and renames it over PATH. INVALID_ARGUMENT for a duplicate or reserved name ("__metadata__"),
// a negative dim, or data whose size is not numel * DTypeSize.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;
};
absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace sinkserve
