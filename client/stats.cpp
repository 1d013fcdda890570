#include "client/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace sinkserve::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, values.size() - 1);
  const double fraction = rank - static_cast<double>(below);
  return values[below] + (values[above] - values[below]) * fraction;
}

Summary Summarize(const std::vector<double>& values) {
  Summary summary;
  if (values.empty()) return summary;
  summary.count = static_cast<int>(values.size());
  summary.mean = std::accumulate(values.begin(), values.end(), 0.0) / summary.count;
  double squares = 0;
  for (double value : values) squares += (value - summary.mean) * (value - summary.mean);
  summary.stddev = std::sqrt(squares / summary.count);
  summary.p50 = Percentile(values, 50);
  summary.p90 = Percentile(values, 90);
  summary.p99 = Percentile(values, 99);
  auto [min, max] = std::minmax_element(values.begin(), values.end());
  summary.min = *min;
  summary.max = *max;
  return summary;
}

}  // namespace sinkserve::bench
