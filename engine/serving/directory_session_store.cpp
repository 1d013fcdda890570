#include "engine/serving/directory_session_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sinkserve {
namespace {

constexpr char kSessionSuffix[] = ".session";
constexpr char kLeaseSuffix[] = ".lease";
constexpr size_t kMaxIdChars = 128;

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status ErrnoStatus(const std::string& what, int error) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  if (error == ENOENT) return absl::NotFoundError(message);
  if (error == ENOSPC || error == EFBIG || error == EDQUOT) {
    return absl::ResourceExhaustedError(message);
  }
  if (error == EACCES || error == EPERM || error == EROFS) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

// Closes a descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now; the close's own error (a delayed write error) matters after a write.
  int Close() {
    const int result = close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, std::span<const std::byte> a, std::span<const std::byte> b,
                      const std::string& path) {
  iovec parts[2] = {{const_cast<std::byte*>(a.data()), a.size()},
                    {const_cast<std::byte*>(b.data()), b.size()}};
  int first = 0;
  while (first < 2) {
    const ssize_t written = writev(fd, parts + first, 2 - first);
    if (written < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("session store: writing ", path), errno);
    }
    size_t left = static_cast<size_t>(written);
    while (first < 2 && left >= parts[first].iov_len) left -= parts[first++].iov_len;
    if (first < 2) {
      parts[first].iov_base = static_cast<char*>(parts[first].iov_base) + left;
      parts[first].iov_len -= left;
    }
  }
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& dir) {
  Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || fsync(fd.get()) != 0) {
    return ErrnoStatus(absl::StrCat("session store: syncing directory ", dir), errno);
  }
  return absl::OkStatus();
}

std::string UniqueSuffix() {
  static thread_local std::mt19937_64 random(std::random_device{}());
  return absl::StrCat(getpid(), ".", absl::Hex(random()));
}

// Writes `text` to a new file `path` (O_EXCL); errno is kept on failure.
bool WriteSmallFile(const std::string& path, const std::string& text) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) return false;
  return write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
         fd.Close() == 0;
}

// flock(DIR/.lease-lock), held until the returned descriptor closes.
absl::StatusOr<std::unique_ptr<Fd>> LockLeases(const std::string& dir) {
  const std::string path = dir + "/.lease-lock";
  auto fd = std::make_unique<Fd>(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (fd->get() < 0) return ErrnoStatus(absl::StrCat("session store: opening ", path), errno);
  while (flock(fd->get(), LOCK_EX) != 0) {
    if (errno != EINTR) return ErrnoStatus(absl::StrCat("session store: locking ", path), errno);
  }
  return fd;
}

// A lease file's owner and expiry; nullopt when unreadable (treated as expired).
struct LeaseInfo {
  std::string owner;
  int64_t expiry_unix_ms = 0;
};
std::optional<LeaseInfo> ReadLease(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return std::nullopt;
  char buffer[512];
  const ssize_t n = read(fd.get(), buffer, sizeof(buffer));
  if (n <= 0) return std::nullopt;
  std::vector<std::string> lines = absl::StrSplit(std::string(buffer, n), '\n');
  LeaseInfo lease;
  if (lines.size() < 2 || !absl::SimpleAtoi(lines[1], &lease.expiry_unix_ms)) return std::nullopt;
  lease.owner = lines[0];
  return lease;
}

}  // namespace

absl::Status CheckStoredSessionId(const std::string& id) {
  if (id.empty() || id.size() > kMaxIdChars) {
    return absl::InvalidArgumentError(
        absl::StrCat("session_id: 1 to ", kMaxIdChars, " characters, got ", id.size()));
  }
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          "session_id: only letters, digits, '_' and '-' (no path characters)");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DirectorySessionStore>> DirectorySessionStore::Open(
    const std::string& dir, bool sync) {
  if (dir.empty()) return absl::InvalidArgumentError("--session-store: empty directory name");
  // A store that exists but cannot be written is accepted: each write then fails on its own
  // (counted and logged), and sessions stay in memory.
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(absl::StrCat("--session-store: cannot create ", dir), errno);
  }
  struct stat info {};
  if (stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("--session-store: ", dir, " is not a directory"));
  }
  signal(SIGXFSZ, SIG_IGN);  // a file-size limit fails the write (EFBIG) instead of killing us
  return std::unique_ptr<DirectorySessionStore>(new DirectorySessionStore(dir, sync));
}

absl::StatusOr<std::string> DirectorySessionStore::PathOf(const std::string& id,
                                                          const char* suffix) const {
  if (absl::Status status = CheckStoredSessionId(id); !status.ok()) return status;
  return absl::StrCat(dir_, "/", id, suffix);
}

absl::Status DirectorySessionStore::Save(const std::string& id, std::span<const std::byte> header,
                                         std::span<const std::byte> contents) {
  absl::StatusOr<std::string> path = PathOf(id, kSessionSuffix);
  if (!path.ok()) return path.status();
  const std::string temp = absl::StrCat(dir_, "/.", id, ".", UniqueSuffix(), ".tmp");
  absl::Status status;
  {
    Fd fd(open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.get() < 0) return ErrnoStatus(absl::StrCat("session store: creating ", temp), errno);
    status = WriteAll(fd.get(), header, contents, temp);
    if (status.ok() && sync_ && fsync(fd.get()) != 0) {
      status = ErrnoStatus(absl::StrCat("session store: syncing ", temp), errno);
    }
    if (fd.Close() != 0 && status.ok()) {
      status = ErrnoStatus(absl::StrCat("session store: closing ", temp), errno);
    }
  }
  if (status.ok() && rename(temp.c_str(), path->c_str()) != 0) {
    status = ErrnoStatus(absl::StrCat("session store: renaming ", temp, " to ", *path), errno);
  }
  if (!status.ok()) {
    unlink(temp.c_str());
    return status;
  }
  return sync_ ? SyncDirectory(dir_) : absl::OkStatus();
}

absl::StatusOr<std::vector<std::byte>> DirectorySessionStore::Load(const std::string& id) {
  absl::StatusOr<std::string> path = PathOf(id, kSessionSuffix);
  if (!path.ok()) return path.status();
  Fd fd(open(path->c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(absl::StrCat("session store: opening ", *path), errno);
  struct stat info {};
  if (fstat(fd.get(), &info) != 0) {
    return ErrnoStatus(absl::StrCat("session store: reading ", *path), errno);
  }
  std::vector<std::byte> bytes(static_cast<size_t>(info.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("session store: reading ", *path), errno);
    if (n == 0) break;  // shrank while read: the parser finds it truncated
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

bool DirectorySessionStore::Contains(const std::string& id) {
  absl::StatusOr<std::string> path = PathOf(id, kSessionSuffix);
  return path.ok() && access(path->c_str(), F_OK) == 0;
}

absl::Status DirectorySessionStore::Remove(const std::string& id) {
  absl::StatusOr<std::string> path = PathOf(id, kSessionSuffix);
  if (!path.ok()) return path.status();
  if (unlink(path->c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(absl::StrCat("session store: removing ", *path), errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DirectorySessionStore::Quarantine(const std::string& id) {
  absl::StatusOr<std::string> path = PathOf(id, kSessionSuffix);
  if (!path.ok()) return path.status();
  const std::string target =
      absl::StrCat(dir_, "/quarantine/", id, ".", NowUnixMs(), kSessionSuffix);
  if (mkdir((dir_ + "/quarantine").c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(absl::StrCat("session store: creating ", dir_, "/quarantine"), errno);
  }
  if (rename(path->c_str(), target.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("session store: moving ", *path, " to ", target), errno);
  }
  return target;
}

absl::Status DirectorySessionStore::Lease(const std::string& id, const std::string& owner,
                                          std::chrono::milliseconds duration) {
  absl::StatusOr<std::string> path = PathOf(id, kLeaseSuffix);
  if (!path.ok()) return path.status();
  absl::StatusOr<std::unique_ptr<Fd>> lock = LockLeases(dir_);
  if (!lock.ok()) return lock.status();
  // Under the lock: free, ours (renewed), expired (taken over), or someone else's.
  const std::optional<LeaseInfo> held = ReadLease(*path);
  const int64_t now = NowUnixMs();
  if (held && held->owner != owner && held->expiry_unix_ms > now) {
    const int64_t retry_ms = std::min<int64_t>(held->expiry_unix_ms - now, 1000);
    return absl::AbortedError(absl::StrCat(
        "session_id: session ", id, " is being restored by server ", held->owner,
        " (lease for another ", held->expiry_unix_ms - now, " ms); retry in ", retry_ms,
        " ms"));
  }
  // Written whole, then renamed into place: a crash never leaves half a lease.
  const std::string temp = absl::StrCat(*path, ".", UniqueSuffix(), ".tmp");
  if (!WriteSmallFile(temp, absl::StrCat(owner, "\n", now + duration.count(), "\n")) ||
      rename(temp.c_str(), path->c_str()) != 0) {
    const int error = errno;
    unlink(temp.c_str());
    return ErrnoStatus(absl::StrCat("session store: writing ", *path), error);
  }
  return absl::OkStatus();
}

void DirectorySessionStore::Release(const std::string& id, const std::string& owner) {
  absl::StatusOr<std::string> path = PathOf(id, kLeaseSuffix);
  if (!path.ok()) return;
  absl::StatusOr<std::unique_ptr<Fd>> lock = LockLeases(dir_);
  if (!lock.ok()) return;
  const std::optional<LeaseInfo> held = ReadLease(*path);
  if (held && held->owner == owner) unlink(path->c_str());
}

int DirectorySessionStore::RemoveWrittenBefore(int64_t unix_ms) {
  DIR* listing = opendir(dir_.c_str());
  if (listing == nullptr) return 0;
  int removed = 0;
  while (const dirent* entry = readdir(listing)) {
    const std::string name = entry->d_name;
    // Sessions, and temporary files a crashed writer left.
    if (!absl::EndsWith(name, kSessionSuffix) && !absl::EndsWith(name, ".tmp")) continue;
    const std::string path = absl::StrCat(dir_, "/", name);
    struct stat info {};
    if (stat(path.c_str(), &info) != 0) continue;
    const int64_t written_ms =
        static_cast<int64_t>(info.st_mtim.tv_sec) * 1000 + info.st_mtim.tv_nsec / 1'000'000;
    if (written_ms < unix_ms && unlink(path.c_str()) == 0) removed += name[0] != '.';
  }
  closedir(listing);
  return removed;
}

StoreUsage DirectorySessionStore::Usage() {
  StoreUsage usage;
  DIR* listing = opendir(dir_.c_str());
  if (listing == nullptr) return usage;
  while (const dirent* entry = readdir(listing)) {
    const std::string name = entry->d_name;
    if (name[0] == '.' || !absl::EndsWith(name, kSessionSuffix)) continue;
    struct stat info {};
    if (stat(absl::StrCat(dir_, "/", name).c_str(), &info) != 0) continue;
    usage.bytes += static_cast<uint64_t>(info.st_size);
    ++usage.sessions;
  }
  closedir(listing);
  return usage;
}

}  // namespace sinkserve
