#include "server/session_store_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "server/logging.h"

namespace sinkserve::server {
namespace {

// A 20 MB session written to the page cache takes milliseconds, fsync'ed to a slow volume up
// to seconds: 0.5 ms to 10 s.
const prometheus::Histogram::BucketBoundaries kStoreBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

constexpr const char* kTriggers[] = {"spill", "drain", "turn"};
constexpr const char* kFailureReasons[] = {"lease", "corrupt", "model", "io", "memory"};

}  // namespace

SessionStoreMetrics::SessionStoreMetrics(prometheus::Registry& registry,
                                         const std::string& model_name) {
  writes_ = &prometheus::BuildCounter()
                 .Name("sinkserve_session_store_writes_total")
                 .Help("Sessions written to the session store: trigger=spill (evicted from "
                       "memory), drain (shutdown), turn (--session-persist turn); result=ok or "
                       "error (a failed spill loses the session; any other failure keeps it in "
                       "memory)")
                 .Labels({{"model_name", model_name}})
                 .Register(registry);
  for (const char* trigger : kTriggers) {
    for (const char* result : {"ok", "error"}) writes_->Add({{"trigger", trigger}, {"result", result}});
  }
  restores_ = &prometheus::BuildCounter()
                   .Name("sinkserve_session_restores_total")
                   .Help("Sessions restored from the session store into memory")
                   .Labels({{"model_name", model_name}})
                 .Register(registry)
                   .Add({});
  restore_failures_ =
      &prometheus::BuildCounter()
           .Name("sinkserve_session_restore_failures_total")
           .Help("Restores that failed: reason=lease (another replica is restoring it), corrupt "
                 "(file damaged, quarantined), model (saved under another model or cache "
                 "format), io (the store could not be read), memory (no room for its cache)")
           .Labels({{"model_name", model_name}})
                 .Register(registry);
  for (const char* reason : kFailureReasons) restore_failures_->Add({{"reason", reason}});
  store_bytes_ = &prometheus::BuildGauge()
                      .Name("sinkserve_session_store_bytes")
                      .Help("Bytes of session files in the session store (all replicas')")
                      .Labels({{"model_name", model_name}})
                 .Register(registry)
                      .Add({});
  store_sessions_ = &prometheus::BuildGauge()
                         .Name("sinkserve_session_store_sessions")
                         .Help("Session files in the session store (all replicas')")
                         .Labels({{"model_name", model_name}})
                 .Register(registry)
                         .Add({});
  save_seconds_ = &prometheus::BuildHistogram()
                       .Name("sinkserve_session_save_seconds")
                       .Help("Writing one session to the store: cache copy, encode, write, fsync, "
                             "rename")
                       .Labels({{"model_name", model_name}})
                 .Register(registry)
                       .Add({}, kStoreBuckets);
  restore_seconds_ = &prometheus::BuildHistogram()
                          .Name("sinkserve_session_restore_seconds")
                          .Help("Restoring one session from the store: lease, read, check, "
                                "rebuild")
                          .Labels({{"model_name", model_name}})
                 .Register(registry)
                          .Add({}, kStoreBuckets);
}

const char* SessionStoreMetrics::FailureReason(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kAborted: return "lease";
    case absl::StatusCode::kDataLoss: return "corrupt";
    case absl::StatusCode::kFailedPrecondition: return "model";
    case absl::StatusCode::kResourceExhausted: return "memory";
    default: return "io";
  }
}

void SessionStoreMetrics::OnSessionWritten(StoreWrite why, const std::string& id, uint64_t bytes,
                                           double seconds, const absl::Status& status) {
  writes_->Add({{"trigger", StoreWriteName(why)}, {"result", status.ok() ? "ok" : "error"}})
      .Increment();
  if (status.ok()) {
    save_seconds_->Observe(seconds);
    Log(spdlog::level::debug, "session written",
        {{"session", id}, {"trigger", StoreWriteName(why)}, {"bytes", bytes},
         {"ms", seconds * 1e3}});
    return;
  }
  Log(spdlog::level::warn, "session store write failed",
      {{"session", id}, {"trigger", StoreWriteName(why)}, {"error", std::string(status.message())},
       {"session_kept", why == StoreWrite::kStoreWriteSpill ? "no (evicted)" : "in memory"}});
}

void SessionStoreMetrics::OnSessionRestored(const std::string& id, uint64_t bytes,
                                            double seconds) {
  restores_->Increment();
  restore_seconds_->Observe(seconds);
  Log(spdlog::level::info, "session restored",
      {{"session", id}, {"bytes", bytes}, {"ms", seconds * 1e3}});
}

void SessionStoreMetrics::OnSessionRestoreFailed(const std::string& id,
                                                 const absl::Status& status) {
  restore_failures_->Add({{"reason", FailureReason(status)}}).Increment();
  Log(absl::IsAborted(status) ? spdlog::level::info : spdlog::level::warn,
      "session restore failed",
      {{"session", id}, {"reason", FailureReason(status)}, {"error", std::string(status.message())}});
}

void SessionStoreMetrics::OnStoreUsage(const StoreUsage& usage) {
  store_bytes_->Set(static_cast<double>(usage.bytes));
  store_sessions_->Set(static_cast<double>(usage.sessions));
}

}  // namespace sinkserve::server
