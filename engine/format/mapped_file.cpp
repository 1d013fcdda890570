// MappedFile, ErrnoError (see mapped_file.h).
#include "engine/format/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace sinkserve {
namespace {

// Closes a file descriptor on every path out of a function.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// Opens PATH for reading and checks it is a regular file. O_NONBLOCK so that a FIFO planted in
// a model directory cannot block open(); it has no effect on regular files.
absl::StatusOr<int> OpenRegularFile(const std::string& path, struct stat* st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat(path, ": cannot open"));
  }
  if (::fstat(fd, st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError(err, absl::StrCat(path, ": cannot stat"));
  }
  if (!S_ISREG(st->st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  return fd;
}

}  // namespace

absl::Status ErrnoError(int err, absl::string_view message) {
  if (err == 0) return absl::UnknownError(message);
  return absl::ErrnoToStatus(err, message);
}

MappedFile::~MappedFile() {
  if (!bytes_.empty()) ::munmap(const_cast<std::byte*>(bytes_.data()), bytes_.size());
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  struct stat st {};
  absl::StatusOr<int> fd = OpenRegularFile(path, &st);
  if (!fd.ok()) return fd.status();
  FdCloser closer(*fd);  // the mapping outlives the descriptor
  std::unique_ptr<MappedFile> file(new MappedFile());
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) return file;  // mmap refuses a zero length
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, *fd, 0);
  if (mapping == MAP_FAILED) return ErrnoError(errno, absl::StrCat(path, ": mmap failed"));
  file->bytes_ = {static_cast<const std::byte*>(mapping), size};
  return file;
}

}  // namespace sinkserve
