// Reading checkpoint files: a whole file mapped read-only, a small file read into memory, and
// errno turned into a status. Shared by the safetensors and torch checkpoint readers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sinkserve {

// A file mapped read-only (PROT_READ, MAP_PRIVATE) as a whole. The fd is closed as soon as the
// mapping exists; the destructor unmaps. A symlink is followed (the Hugging Face cache is made
// of them). If another process truncates the file while it is mapped, touching the lost pages
// raises SIGBUS: checkpoints are expected to be immutable while the server runs.
class MappedFile {
 public:
  // NOT_FOUND when PATH does not exist; INVALID_ARGUMENT when it is not a regular file (a
  // directory, a FIFO: it is opened O_NONBLOCK so a FIFO cannot hang us). An empty file maps to
  // no bytes.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const { return bytes_; }

 private:
  MappedFile() = default;

  std::span<const std::byte> bytes_;
};

// absl::ErrnoToStatus, but never OK: a failed call that left errno at 0 is still a failure.
absl::Status ErrnoError(int err, absl::string_view message);

}  // namespace sinkserve
