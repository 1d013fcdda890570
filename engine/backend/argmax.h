// The greedy choice: the first maximum, like torch.argmax (and std::max_element). Every greedy
// path uses this rule: the sampler, Backend::ForwardBatchGreedy, the CUDA argmax kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

namespace sinkserve {

inline int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace sinkserve
