#include "common/base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace sinkserve {
namespace {

// absl::ErrnoToStatus, but never OK: a failed call that left errno at 0 is still a failure.
absl::Status ErrnoError(int err, const std::string& message) {
  if (err == 0) return absl::UnknownError(message);
  return absl::ErrnoToStatus(err, message);
}

absl::Status TooLarge(const std::string& path, uint64_t size, uint64_t max_bytes) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": ", size, " bytes, larger than the ", max_bytes, "-byte limit"));
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, const ReadFileOptions& options) {
  // O_NONBLOCK makes open() return at once on a FIFO with no writer; it does not affect
  // regular files, and a FIFO is refused below before it is read.
  const int fd = ::open(
      path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | (options.regular_file_only ? O_NONBLOCK : 0));
  if (fd < 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat(path, ": cannot open"));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat(path, ": cannot stat"));
  }
  if (S_ISDIR(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": a directory"));
  const bool regular = S_ISREG(st.st_mode);
  if (options.regular_file_only && !regular) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (regular && size > options.max_bytes) return TooLarge(path, size, options.max_bytes);

  std::string text;
  if (regular) text.reserve(size);
  char buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      return ErrnoError(err, absl::StrCat(path, ": read failed"));
    }
    if (got == 0) return text;
    if (text.size() + static_cast<size_t>(got) > options.max_bytes) {
      return TooLarge(path, text.size() + static_cast<size_t>(got), options.max_bytes);
    }
    text.append(buffer, static_cast<size_t>(got));
  }
}

}  // namespace sinkserve
