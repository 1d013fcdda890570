// PersistentSessionStore: where named sessions go when they leave a server's memory (spilled
// under memory pressure, written at drain or after every turn) and come back from, on this
// replica or another that shares the store. Sessions are opaque bytes here (the session file
// format is engine/serving/session_file.h), so another backing store — object storage, Redis —
// is one more implementation of this interface; the scheduler does not change.
//
// (Named "persistent" because engine/session.h's SessionStore is the in-memory owner of live
// sessions.) Called from the scheduler thread only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve {

struct StoreUsage {
  uint64_t bytes = 0;
  size_t sessions = 0;
};

class PersistentSessionStore {
 public:
  virtual ~PersistentSessionStore() = default;

  // Stores `header` + `contents` as session `id`, atomically: a reader sees the old file or the
  // new one, never a mix, and a crash leaves one of them. INVALID_ARGUMENT for an id that is
  // not letters, digits, '_' and '-' (nothing is ever written outside the store).
  virtual absl::Status Save(const std::string& id, std::span<const std::byte> header,
                            std::span<const std::byte> contents) = 0;
  // The bytes of session `id`; NOT_FOUND when the store has none.
  virtual absl::StatusOr<std::vector<std::byte>> Load(const std::string& id) = 0;
  virtual bool Contains(const std::string& id) = 0;
  // Deletes session `id` (OK when it is already gone).
  virtual absl::Status Remove(const std::string& id) = 0;
  // Sets session `id` aside for inspection (a corrupt file); it no longer loads. Returns where.
  virtual absl::StatusOr<std::string> Quarantine(const std::string& id) = 0;

  // Takes the right to restore session `id` for `duration`, so that two replicas never both
  // restore (and then both own) one session. ABORTED naming the holder when another owner's
  // lease has not expired; an expired lease is taken over.
  virtual absl::Status Lease(const std::string& id, const std::string& owner,
                             std::chrono::milliseconds duration) = 0;
  // Gives back `owner`'s lease on `id` (no-op when it holds none).
  virtual void Release(const std::string& id, const std::string& owner) = 0;

  // Removes sessions last written before `unix_ms`; returns how many.
  virtual int RemoveWrittenBefore(int64_t unix_ms) = 0;
  // What the store holds now (all sessions, whichever replica wrote them).
  virtual StoreUsage Usage() = 0;
  // Where it is, in words ("directory /var/lib/sinkserve/sessions").
  virtual std::string Describe() const = 0;
};

}  // namespace sinkserve
