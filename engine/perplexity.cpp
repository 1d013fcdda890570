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

void TopLogprobs(std::span<const float> logits, int n, std::vector<TokenLogprob>* out) {
  double max_logit = logits[0];
  for (float logit : logits) max_logit = std::max<double>(max_logit, logit);
  double sum = 0.0;
  for (float logit : logits) sum += std::exp(logit - max_logit);
  const double log_normalizer = std::log(sum) + max_logit;
  // Keep the n best in a small sorted list: n ≤ 20 against a vocabulary of ~50k.
  out->clear();
  const size_t keep = std::min<size_t>(static_cast<size_t>(std::max(n, 0)), logits.size());
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::vector<int32_t> best;
  best.reserve(keep + 1);
  for (int32_t token = 0; token < static_cast<int32_t>(logits.size()) && keep > 0; ++token) {
    if (best.size() == keep && !better(token, best.back())) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), token, better), token);
    if (best.size() > keep) best.pop_back();
  }
  for (int32_t token : best) {
    out->push_back({token, static_cast<float>(logits[token] - log_normalizer)});
  }
}

}  // namespace sinkserve
