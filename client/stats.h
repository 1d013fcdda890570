// Summary statistics of a latency series: mean, standard deviation and percentiles.
#pragma once

#include <vector>

namespace sinkserve::bench {

// Percentile p (0..100) of `values` with linear interpolation between closest ranks: numpy's
// default, which vLLM's `bench serve` uses, so our p99 and theirs agree on the same series.
// 0 for an empty series.
double Percentile(std::vector<double> values, double p);

struct Summary {
  int count = 0;
  double mean = 0;
  double stddev = 0;  // population standard deviation (numpy's np.std)
  double p50 = 0;     // the median
  double p90 = 0;
  double p99 = 0;
  double min = 0;
  double max = 0;
};

Summary Summarize(const std::vector<double>& values);

}  // namespace sinkserve::bench
