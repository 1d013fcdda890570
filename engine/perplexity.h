// Perplexity arithmetic shared by the CLI (sinkserve perplexity) and the scheduler's Score path.
#pragma once

#include <cstdint>
#include <span>

namespace sinkserve {

// −log softmax(logits)[target], in double so that a long text's mean NLL does not drift.
double TokenNll(std::span<const float> logits, int32_t target);

}  // namespace sinkserve
