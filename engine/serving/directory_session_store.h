// DirectorySessionStore: the session store as a directory (`--session-store DIR`) on local disk
// or on a volume several replicas share (a Kubernetes ReadWriteMany volume, a compose volume).
//
//   DIR/<id>.session        one file per session, replaced atomically: written to a temporary
//                           file, fsync'ed, renamed over, and the directory fsync'ed
//   DIR/<id>.lease          a restore lease: "<owner>\n<expiry unix ms>\n"; every lease is
//                           read, taken and given back under flock(DIR/.lease-lock) (held for
//                           microseconds; the kernel drops it if its holder dies), and a crash
//                           leaves at most a lease that expires
//   DIR/quarantine/         corrupt files, set aside with the time they were found
//
// Ids are checked (letters, digits, '_', '-'; at most 128), so no path leaves DIR. SIGXFSZ is
// ignored process-wide so that a file-size limit (RLIMIT_FSIZE, a full quota) is an error of
// the write, not the death of the server.
#pragma once

#include <memory>
#include <string>

#include "engine/serving/session_store.h"

namespace sinkserve {

class DirectorySessionStore final : public PersistentSessionStore {
 public:
  // Creates DIR when missing; errors name the directory. `sync` = false skips the fsyncs
  // (benchmarks: what a write costs while the page cache absorbs it).
  static absl::StatusOr<std::unique_ptr<DirectorySessionStore>> Open(const std::string& dir,
                                                                     bool sync = true);

  absl::Status Save(const std::string& id, std::span<const std::byte> header,
                    std::span<const std::byte> contents) override;
  absl::StatusOr<std::vector<std::byte>> Load(const std::string& id) override;
  bool Contains(const std::string& id) override;
  absl::Status Remove(const std::string& id) override;
  absl::StatusOr<std::string> Quarantine(const std::string& id) override;
  absl::Status Lease(const std::string& id, const std::string& owner,
                     std::chrono::milliseconds duration) override;
  void Release(const std::string& id, const std::string& owner) override;
  int RemoveWrittenBefore(int64_t unix_ms) override;
  StoreUsage Usage() override;
  std::string Describe() const override { return "directory " + dir_; }

  const std::string& dir() const { return dir_; }

 private:
  DirectorySessionStore(std::string dir, bool sync) : dir_(std::move(dir)), sync_(sync) {}
  // DIR/<id><suffix>, or INVALID_ARGUMENT for an id that is not a plain name.
  absl::StatusOr<std::string> PathOf(const std::string& id, const char* suffix) const;

  std::string dir_;
  bool sync_;
};

// INVALID_ARGUMENT unless `id` is 1–128 letters, digits, '_' or '-'.
absl::Status CheckStoredSessionId(const std::string& id);

}  // namespace sinkserve
