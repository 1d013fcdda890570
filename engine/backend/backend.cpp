#include "engine/backend/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/backend/argmax.h"
#include "common/base/status_macros.h"

namespace sinkserve {

absl::Status CheckForwardArgs(std::span<const int32_t> tokens, std::span<const float> logits,
                              bool all_logits, int64_t vocab) {
  const size_t n = tokens.size();
  if (n == 0) return absl::InvalidArgumentError("Forward needs at least one token");
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ")"));
    }
  }
  const size_t logits_needed = (all_logits ? n : 1) * vocab;
  if (logits.size() < logits_needed) {
    return absl::InvalidArgumentError(absl::StrCat("logits buffer holds ", logits.size(),
                                                   " floats, ", logits_needed, " needed"));
  }
  return absl::OkStatus();
}

absl::Status CheckBatchArgs(std::span<const int32_t> tokens, std::span<KvCache* const> caches,
                            std::span<const float> logits, int64_t vocab) {
  const size_t n = tokens.size();
  if (n == 0 || caches.size() != n) {
    return absl::InvalidArgumentError("ForwardBatch needs one cache per token, at least one");
  }
  if (logits.size() < n * vocab) {
    return absl::InvalidArgumentError("logits buffer too small for the batch");
  }
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " of batch row ", i,
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ")"));
    }
    if (caches[i]->MaxStepTokens() < 1) {
      return absl::OutOfRangeError(absl::StrCat("batch row ", i, ": ", caches[i]->Describe(),
                                                " is full"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (caches[j] == caches[i]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "batch rows ", j, " and ", i, " share a cache; a batch takes one token per session"));
      }
    }
  }
  return absl::OkStatus();
}

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

absl::Status Backend::ForwardBatchGreedy(std::span<const int32_t> tokens,
                                         std::span<KvCache* const> caches,
                                         std::span<float> logits, std::span<int32_t> next) {
  if (next.size() < tokens.size() || tokens.empty() || logits.size() % tokens.size() != 0) {
    return absl::InvalidArgumentError(
        "ForwardBatchGreedy needs a next-token slot per row and logits of exactly [rows][vocab]");
  }
  RETURN_IF_ERROR(ForwardBatch(tokens, caches, logits));
  const size_t vocab = logits.size() / tokens.size();
  for (size_t i = 0; i < tokens.size(); ++i) next[i] = Argmax(logits.subspan(i * vocab, vocab));
  return absl::OkStatus();
}

}  // namespace sinkserve
