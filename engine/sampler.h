// Sampler: picks the next token from logits — greedy, temperature, top-k, top-p and a
// repetition penalty, applied in Hugging Face's order (penalty, temperature, top-k, top-p).
//
// Deterministic: the same seed, parameters and logits give the same tokens on every machine
// (own PRNG stream and uniform conversion, no std:: distributions).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/argmax.h"

namespace sinkserve {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy (argmax); otherwise logits / temperature
  int top_k = 0;                    // keep the k most likely tokens; 0 = off
  float top_p = 1.0f;               // keep the smallest set with probability mass ≥ top_p; 1 = off
  float repetition_penalty = 1.0f;  // HF/CTRL: logit/p if > 0 else logit·p for seen tokens; 1 = off
  uint64_t seed = 0;

  // INVALID_ARGUMENT naming the field when a value is out of range.
  absl::Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Chooses a token. `logits` ([vocab], modified in place) and `history` (the tokens the
  // repetition penalty applies to). Advances the random stream only when sampling.
  int32_t Sample(std::span<float> logits, std::span<const int32_t> history);

  const SamplingParams& params() const { return params_; }
  // Changes the parameters for the next tokens; the random stream continues where it is
  // (params.seed is ignored). How a session's later turns keep one random stream.
  void set_params(const SamplingParams& params);
  // The position of the random stream, to save a session and resume it exactly.
  uint64_t random_state() const { return state_; }
  void set_random_state(uint64_t state) { state_ = state; }

 private:
  double NextUniform();  // [0, 1) from the top 53 bits of splitmix64

  SamplingParams params_;
  uint64_t state_;
};

}  // namespace sinkserve
