// Reads a Prometheus text exposition (the server's /metrics) into series -> value, so the
// table can take differences of the server's own counters around a run.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace sinkserve::bench {

class MetricsSnapshot {
 public:
  // Parses the text format: "name{label="v",...} value" lines; comments skipped. The
  // model_name label (one value per server) is left out of the series' keys.
  static MetricsSnapshot Parse(const std::string& exposition);

  // The value of a series spelled as exposed, e.g.
  // `sinkserve_attention_seconds_sum{phase="decode"}`; 0 when absent.
  double Value(const std::string& series) const;
  bool Has(const std::string& series) const { return values_.count(series) > 0; }

 private:
  std::map<std::string, double> values_;
};

// GET http://host:port/metrics (plain HTTP/1.0; the exposer needs nothing more).
absl::StatusOr<MetricsSnapshot> ScrapeMetrics(const std::string& host, int port);

}  // namespace sinkserve::bench
