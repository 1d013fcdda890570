#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace sinkserve {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0 (0 = greedy), got ", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty must be > 0 (1 = off), got ", repetition_penalty));
  }
  return absl::OkStatus();
}

int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), state_(params.seed) {}

void Sampler::set_params(const SamplingParams& params) {
  const uint64_t seed = params_.seed;
  params_ = params;
  params_.seed = seed;
}

double Sampler::NextUniform() {
  // splitmix64: tiny, fast, and identical everywhere.
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t Sampler::Sample(std::span<float> logits, std::span<const int32_t> history) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (params_.repetition_penalty != 1.0f) {
    // Each distinct token once (HF gathers then scatters, so duplicates don't compound).
    std::vector<int32_t> seen(history.begin(), history.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t token : seen) {
      if (token < 0 || token >= vocab) continue;
      float& logit = logits[token];
      logit = logit < 0 ? logit * params_.repetition_penalty : logit / params_.repetition_penalty;
    }
  }
  if (params_.temperature == 0.0f) {
    return Argmax(logits);
  }

  candidates_.clear();
  candidates_.reserve(vocab);
  for (int32_t token = 0; token < vocab; ++token) {
    candidates_.emplace_back(logits[token] / params_.temperature, token);
  }
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t kept = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < kept) {
    kept = params_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + kept, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  // Softmax over the kept candidates (sorted, most likely first).
  const float max_logit = candidates_[0].first;
  std::vector<double> probs(kept);
  double total = 0.0;
  for (size_t i = 0; i < kept; ++i) total += probs[i] = std::exp(candidates_[i].first - max_logit);
  if (params_.top_p < 1.0f) {
    // Keep the most likely tokens until their mass reaches top_p (at least one).
    double mass = 0.0;
    size_t nucleus = 0;
    while (nucleus < kept) {
      mass += probs[nucleus++] / total;
      if (mass >= params_.top_p) break;
    }
    kept = nucleus;
    total = 0.0;
    for (size_t i = 0; i < kept; ++i) total += probs[i];
  }
  const double target = NextUniform() * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    cumulative += probs[i];
    if (target < cumulative) return candidates_[i].second;
  }
  return candidates_[kept - 1].second;
}

}  // namespace sinkserve
