// Perplexity arithmetic shared by the CLI (sinkserve perplexity) and the scheduler's Score path.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace sinkserve {

// −log softmax(logits)[target], in double so that a long text's mean NLL does not drift.
double TokenNll(std::span<const float> logits, int32_t target);

// A token and its log-probability.
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// The `n` most likely tokens of log softmax(logits), most likely first (ties: lower id first),
// into `out` (replaced). What the OpenAI API's `logprobs: n` returns per position.
void TopLogprobs(std::span<const float> logits, int n, std::vector<TokenLogprob>* out);

}  // namespace sinkserve
