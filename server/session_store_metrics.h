// The session store's metrics and logs (`--session-store`): writes by trigger and result,
// restores, restore failures by reason, the store's size, and write/restore latency. Registered
// on the server's Prometheus registry; called on the scheduler thread.
//
//   sinkserve_session_store_writes_total{trigger="spill|drain|turn", result="ok|error"}
//   sinkserve_session_restores_total
//   sinkserve_session_restore_failures_total{reason="lease|corrupt|model|io|memory"}
//   sinkserve_session_store_bytes, sinkserve_session_store_sessions   (gauges, whole store)
//   sinkserve_session_save_seconds, sinkserve_session_restore_seconds (histograms)
#pragma once

#include <memory>
#include <string>

#include "engine/serving/session_table.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace sinkserve::server {

class SessionStoreMetrics final : public SessionStoreListener {
 public:
  SessionStoreMetrics(prometheus::Registry& registry, const std::string& model_name);

  void OnSessionWritten(StoreWrite why, const std::string& id, uint64_t bytes, double seconds,
                        const absl::Status& status) override;
  void OnSessionRestored(const std::string& id, uint64_t bytes, double seconds) override;
  void OnSessionRestoreFailed(const std::string& id, const absl::Status& status) override;
  void OnStoreUsage(const StoreUsage& usage) override;

  // The reason label of a failed restore's status.
  static const char* FailureReason(const absl::Status& status);

 private:
  prometheus::Family<prometheus::Counter>* writes_;
  prometheus::Counter* restores_;
  prometheus::Family<prometheus::Counter>* restore_failures_;
  prometheus::Gauge* store_bytes_;
  prometheus::Gauge* store_sessions_;
  prometheus::Histogram* save_seconds_;
  prometheus::Histogram* restore_seconds_;
};

}  // namespace sinkserve::server
