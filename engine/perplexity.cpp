#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>

namespace sinkserve {

double TokenNll(std::span<const float> logits, int32_t target) {
  double max_logit = logits[0];
  for (float logit : logits) max_logit = std::max<double>(max_logit, logit);
  double sum = 0.0;
  for (float logit : logits) sum += std::exp(logit - max_logit);
  return std::log(sum) + max_logit - logits[target];
}

}  // namespace sinkserve
