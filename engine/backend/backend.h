// Backend: where the GPT-NeoX forward pass runs — the CPU backend (engine/cpu) and the CUDA
// backend (engine/cuda) implement this interface; the model and the scheduler see only it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/kv_cache.h"

namespace sinkserve {

struct DeviceMemoryStats {
  uint64_t used_bytes = 0;   // held by the backend now: weights, caches, scratch, pooled blocks
  uint64_t peak_bytes = 0;   // the most it ever held
  uint64_t total_bytes = 0;  // the device's memory
  uint64_t free_bytes = 0;   // free on the device now (all processes)
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Runs `tokens` (the next tokens of one sequence) through the model, appending their keys
  // and values to `cache`. Writes logits [tokens.size()][vocab] when all_logits, else the
  // last token's [vocab]. On error (bad token id, cache full) neither cache nor logits change.
  virtual absl::Status Forward(std::span<const int32_t> tokens, KvCache& cache,
                               std::span<float> logits, bool all_logits) = 0;

  // One decode step for N sessions at once: row i is token tokens[i] appended to caches[i]
  // (all distinct). Weights are read once for all rows; logits [N][vocab]. The result equals
  // N separate Forward calls bit for bit (same per-row arithmetic, only the weight reads are
  // shared). On error nothing changes.
  virtual absl::Status ForwardBatch(std::span<const int32_t> tokens,
                                    std::span<KvCache* const> caches, std::span<float> logits) = 0;

  // ForwardBatch for greedy decoding: next[i] = argmax of row i's logits (the lowest id among
  // equal maxima, as std::max_element). `logits` (exactly [N][vocab]) is scratch: the CPU fills it; a
  // device backend takes the argmax on the device and copies back N ids instead of N·vocab
  // logits (leaving `logits` untouched).
  virtual absl::Status ForwardBatchGreedy(std::span<const int32_t> tokens,
                                          std::span<KvCache* const> caches,
                                          std::span<float> logits, std::span<int32_t> next);

  // A dense cache of the model's geometry holding `capacity_tokens`. RESOURCE_EXHAUSTED when
  // the backend's memory (the GPU's) cannot hold it.
  virtual absl::StatusOr<std::unique_ptr<KvCache>> NewDenseCache(int capacity_tokens) const = 0;
  // A cache of the model's geometry under `policy`; RESOURCE_EXHAUSTED likewise.
  virtual absl::StatusOr<std::unique_ptr<KvCache>> NewCache(const CachePolicy& policy) const = 0;

  virtual std::string name() const = 0;  // "cpu (8 threads, avx2+fma+f16c)"

  // Wall time the last Forward/ForwardBatch spent in attention (all layers: storing the new
  // keys/values, scores, softmax, weighted sum): the sinkserve_attention_seconds metric.
  virtual double last_step_attention_seconds() const = 0;

  // Device memory held by the backend (the gpu_memory_* metrics); zeros on the CPU.
  virtual DeviceMemoryStats device_memory() const { return {}; }
};

// The argument checks every backend makes before touching a cache, with the same messages:
// token ids inside the vocabulary, a logits buffer large enough; for a batch, one distinct
// cache per token, each with room for one more token.
absl::Status CheckForwardArgs(std::span<const int32_t> tokens, std::span<const float> logits,
                              bool all_logits, int64_t vocab);
absl::Status CheckBatchArgs(std::span<const int32_t> tokens, std::span<KvCache* const> caches,
                            std::span<const float> logits, int64_t vocab);

// Feeds `tokens` through Forward in the largest steps that stay exact for `cache` (at most
// `max_step_tokens` each), leaving the last token's logits in `logits` ([vocab]).
// This is how prompts are prefilled: one step per chunk reads the weights once per chunk.
absl::Status FeedTokens(Backend& backend, std::span<const int32_t> tokens, KvCache& cache,
                        std::span<float> logits, int max_step_tokens = 256);

}  // namespace sinkserve
