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

  // Probabilities exp((logit − max) / temperature) / total: HF's softmax(logit / temperature)
  // with the maximum taken off first, so no temperature makes a weight overflow. Sorting
  // the vocabulary (the obvious way to apply top-k/top-p) costs ~5 ms per token at 50k tokens,
  // more than a GPU decode step: the kept tokens are found by selection, and only they are
  // sorted. Scratch is per thread (the scheduler samples rows in parallel), not per sampler
  // (one per session: 800 KB each at 50k tokens).
  thread_local std::vector<std::pair<float, int32_t>> candidates;  // (logit, token)
  thread_local std::vector<double> weights;  // per token: of all, or of the top-k
  const bool top_k = params_.top_k > 0 && params_.top_k < vocab;
  // NaN counts as −inf (never chosen). No distribution to sample — every logit −inf, or a +inf
  // one — leaves the greedy choice.
  candidates.clear();
  float max_logit = -std::numeric_limits<float>::infinity();
  for (int32_t token = 0; token < vocab; ++token) {
    float& logit = logits[token];
    if (std::isnan(logit)) logit = -std::numeric_limits<float>::infinity();
    max_logit = std::max(max_logit, logit);
    if (top_k) candidates.emplace_back(logit, token);
  }
  if (!std::isfinite(max_logit)) return Argmax(logits);
  const float temperature = params_.temperature;
  auto weight_of = [&](float logit) {
    return static_cast<double>(std::exp((logit - max_logit) / temperature));
  };
  // Candidates, most likely first; equal logits by token id, so the order is unique whatever
  // the algorithm.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  // Puts candidates [sorted, count) in order, given the first `sorted` are and rank above the
  // rest.
  auto sort_prefix = [&](size_t sorted, size_t count) {
    const auto begin = candidates.begin() + static_cast<ptrdiff_t>(sorted);
    const auto end = candidates.begin() + static_cast<ptrdiff_t>(count);
    if (count - sorted <= 1024) {  // a heap of the few: one comparison for most of the rest
      std::partial_sort(begin, end, candidates.end(), by_logit);
    } else {
      std::nth_element(begin, end, candidates.end(), by_logit);
      std::sort(begin, end, by_logit);
    }
  };
  weights.resize(vocab);
  auto weight = [&](size_t i) { return weights[candidates[i].second]; };
  size_t kept = 0, sorted = 0;
  double total = 0.0;  // ≥ 1: the most likely token weighs 1
  if (top_k) {
    kept = sorted = static_cast<size_t>(params_.top_k);
    sort_prefix(0, kept);
    for (size_t i = 0; i < kept; ++i) {
      total += weights[candidates[i].second] = weight_of(candidates[i].first);
    }
  } else {
    for (int32_t token = 0; token < vocab; ++token) {
      total += weights[token] = weight_of(logits[token]);
    }
    if (params_.top_p >= 1.0f) {
      // The whole distribution, walked in token order: nothing to sort.
      const double target = NextUniform() * total;
      double cumulative = 0.0;
      int32_t last = 0;
      for (int32_t token = 0; token < vocab; ++token) {
        if (weights[token] == 0.0) continue;
        cumulative += weights[token];
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
      if (weights[token] >= floor) candidates.emplace_back(logits[token], token);
    }
    kept = candidates.size();
    // Narrow down where the nucleus ends by halving (each round O(n)): [0, end) ranks above
    // the rest and holds at least top_p of the mass. Then only [0, end) is sorted.
    const auto begin = candidates.begin();
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
    if (target < cumulative) return candidates[i].second;
  }
  return candidates[kept - 1].second;
}

}  // namespace sinkserve
