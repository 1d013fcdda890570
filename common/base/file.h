// Reading a whole file: the one way every layer does it. (Checkpoints are not read but mapped:
// engine/format/safetensors.cpp.)
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/statusor.h"

namespace sinkserve {

struct ReadFileOptions {
  // A larger file is INVALID_ARGUMENT, refused before it is read when its size is known.
  uint64_t max_bytes = std::numeric_limits<uint64_t>::max();
  // Refuse FIFOs, devices and sockets without waiting on them: for files found in a model
  // directory, where a planted FIFO must not hang the server. Otherwise a pipe (/dev/stdin,
  // <(command)) is read to its end.
  bool regular_file_only = false;
};

// The file's bytes. Errors start with the path: NOT_FOUND when it does not exist (other errno
// values map as absl::ErrnoToStatus maps them), INVALID_ARGUMENT for a directory or, under
// OPTIONS, a file too large or not regular.
absl::StatusOr<std::string> ReadFile(const std::string& path, const ReadFileOptions& options = {});

}  // namespace sinkserve
