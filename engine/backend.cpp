#include "engine/backend.h"

#include <algorithm>

namespace sinkserve {

absl::Status FeedTokens(Backend& backend, std::span<const int32_t> tokens, KvCache& cache,
                        std::span<float> logits, int max_step_tokens) {
  for (size_t begin = 0; begin < tokens.size();) {
    const size_t step = std::min<size_t>(
        {tokens.size() - begin, static_cast<size_t>(std::max(1, max_step_tokens)),
         static_cast<size_t>(std::max(1, cache.MaxStepTokens()))});
    if (absl::Status status =
            backend.Forward(tokens.subspan(begin, step), cache, logits, /*all_logits=*/false);
        !status.ok()) {
      return status;
    }
    begin += step;
  }
  return absl::OkStatus();
}

}  // namespace sinkserve
