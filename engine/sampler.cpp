#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

  // Probabilities exp(s − max) / total of the scaled logits s = logit / temperature. Sorting
  // the vocabulary (the obvious way to apply top-k/top-p) costs ~5 ms per token at 50k tokens,
  // more than a GPU decode step: the kept tokens are found by selection, and only they are
  // sorted.
  const float temperature = params_.temperature;
  const bool top_k = params_.top_k > 0 && params_.top_k < vocab;
  // Candidates, most likely first; equal logits by token id, so the order is unique whatever
  // the algorithm.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  // Puts candidates [sorted, count) in order, given the first `sorted` are and rank above the
  // rest.
  auto sort_prefix = [&](size_t sorted, size_t count) {
    const auto begin = candidates_.begin() + static_cast<ptrdiff_t>(sorted);
    const auto end = candidates_.begin() + static_cast<ptrdiff_t>(count);
    if (count - sorted <= 1024) {  // a heap of the few: one comparison for most of the rest
      std::partial_sort(begin, end, candidates_.end(), by_logit);
    } else {
      std::nth_element(begin, end, candidates_.end(), by_logit);
      std::sort(begin, end, by_logit);
    }
  };
  weights_.resize(vocab);  // exp(s − max) per token: of all, or (top-k) of the kept
  auto weight = [&](size_t i) { return weights_[candidates_[i].second]; };
  candidates_.clear();
  size_t kept = 0, sorted = 0;
  double total = 0.0;
  if (top_k) {
    for (int32_t token = 0; token < vocab; ++token) {
      candidates_.emplace_back(logits[token] /= temperature, token);
    }
    kept = sorted = static_cast<size_t>(params_.top_k);
    sort_prefix(0, kept);
    const float max_logit = candidates_[0].first;
    for (size_t i = 0; i < kept; ++i) {
      total += weights_[candidates_[i].second] = std::exp(candidates_[i].first - max_logit);
    }
  } else {
    float max_logit = -std::numeric_limits<float>::infinity();
    for (float& logit : logits) max_logit = std::max(max_logit, logit /= temperature);
    for (int32_t token = 0; token < vocab; ++token) {
      total += weights_[token] = std::exp(logits[token] - max_logit);
    }
    if (params_.top_p >= 1.0f) {
      // The whole distribution, walked in token order: nothing to sort.
      const double target = NextUniform() * total;
      double cumulative = 0.0;
      int32_t last = 0;
      for (int32_t token = 0; token < vocab; ++token) {
        if (weights_[token] == 0.0) continue;
        cumulative += weights_[token];
        last = token;
        if (target < cumulative) return token;
      }
      return last;  // rounding left the target at the total
    }
    // Only top_p: a token below total·(1 − top_p)/vocab cannot be in the nucleus (all such
    // tokens together hold less than 1 − top_p of the mass, and every other token ranks above
    // them), so it is never a candidate. The most likely token (weight 1) always is.
    const double floor = total * (1.0 - params_.top_p) / vocab;
    for (int32_t token = 0; token < vocab; ++token) {
      if (weights_[token] >= floor) candidates_.emplace_back(logits[token], token);
    }
    kept = candidates_.size();
    // Narrow down where the nucleus ends by halving (each round O(n)): [0, end) ranks above
    // the rest and holds at least top_p of the mass. Then only [0, end) is sorted.
    const auto begin = candidates_.begin();
    const double goal = params_.top_p * total;
    size_t low = 0, end = kept;
    double mass_below_low = 0.0;  // of [0, low)
    while (end - low > 256) {
      const size_t mid = low + (end - low) / 2;
      std::nth_element(begin + static_cast<ptrdiff_t>(low), begin + static_cast<ptrdiff_t>(mid),
                       begin + static_cast<ptrdiff_t>(end), by_logit);
      double mass = 0.0;
      for (size_t i = low; i < mid; ++i) mass += weight(i);
      if (mass_below_low + mass >= goal) {
        end = mid;
      } else {
        mass_below_low += mass;
        low = mid;
      }
    }
    std::sort(begin, begin + static_cast<ptrdiff_t>(end), by_logit);
    sorted = end;
  }
  if (params_.top_p < 1.0f) {
    // Keep the most likely tokens until their mass reaches top_p (at least one), in order. The
    // sorted prefix grows if rounding put the end of the nucleus past it.
    double mass = 0.0;
    size_t nucleus = 0;
    while (nucleus < kept) {
      if (nucleus == sorted) {
        const size_t grown = std::min(kept, std::max<size_t>(64, 2 * sorted));
        sort_prefix(sorted, grown);
        sorted = grown;
      }
      mass += weight(nucleus++) / total;
      if (mass >= params_.top_p) break;
    }
    kept = nucleus;
    total = 0.0;
    for (size_t i = 0; i < kept; ++i) total += weight(i);
  }
  const double target = NextUniform() * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    cumulative += weight(i);
    if (target < cumulative) return candidates_[i].second;
  }
  return candidates_[kept - 1].second;
}

}  // namespace sinkserve
