// CpuBackend: the GPT-NeoX forward of docs/numerics.md in fp32 arithmetic on the CPU.
// It is the reference every other backend is checked against.
#pragma once

#include <memory>
#include <vector>

#include "common/base/thread_pool.h"
#include "engine/backend/backend.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/int8_activations.h"
#include "engine/format/config.h"
#include "engine/format/weights.h"

namespace sinkserve {

class CpuBackend final : public Backend {
 public:
  // `weights` must outlive the backend. num_threads 0 = all cores. `isa`: the kernels to run,
  // one this CPU supports (cpu::CpuSupports); kAuto: the best it has. `activations`: kInt8
  // quantizes the inputs of int8 and NF4 matrices (engine/cpu/int8_activations.h).
  CpuBackend(const ModelConfig& config, const ModelWeights& weights, int num_threads,
             cpu::CpuIsa isa = cpu::CpuIsa::kAuto,
             cpu::Activations activations = cpu::Activations::kFp32);

  absl::Status Forward(std::span<const int32_t> tokens, KvCache& cache, std::span<float> logits,
                       bool all_logits) override;
  absl::Status ForwardBatch(std::span<const int32_t> tokens, std::span<KvCache* const> caches,
                            std::span<float> logits) override;
  absl::StatusOr<std::unique_ptr<KvCache>> NewDenseCache(int capacity_tokens) const override;
  absl::StatusOr<std::unique_ptr<KvCache>> NewCache(const CachePolicy& policy) const override;
  std::string name() const override;
  double last_step_attention_seconds() const override { return attention_seconds_; }

 private:
  // Scratch activations of one step, grown to the largest step seen (run state,
  // docs/conventions.md §3).
  struct RunState {
    int tokens = 0;
    std::vector<float> residual;    // [n][H] the residual stream x
    std::vector<float> normed;      // [n][H] LayerNorm output
    std::vector<float> qkv;         // [n][3H] per head (q, k, v), k rotated in place
    std::vector<float> attention;   // [n][H] attention output before attention.dense
    std::vector<float> attn_out;    // [n][H] after attention.dense
    std::vector<float> mlp_hidden;  // [n][F]
    std::vector<float> mlp_out;     // [n][H]
    std::vector<float> rotary;      // [n][max_spans + 1][2][rotary_ndims] cos, sin per position
    std::vector<std::vector<KvSpan>> spans;   // [n] what row t attends
    std::vector<KvCache*> row_cache;          // [n] the cache row t belongs to
    std::vector<int> row_index;               // [n] row t's index within its cache's step
    std::vector<std::vector<float>> scores;   // [threads][cached keys] softmax scratch
    std::vector<std::vector<float>> queries;  // [threads][head_dim] rotated query scratch
    // cos, sin of rank r at [r][2][rotary_ndims], for caches whose keys are stored un-rotated
    // (ranks are < S + W + 1, so this stays small and is computed once).
    std::vector<float> rank_rotary;
  };

  void Reserve(int n_tokens, int cache_capacity);
  void ReserveRankRotary(int64_t ranks);
  // The forward over state_.row_cache/row_index rows; logits for rows first_logits.. .
  void Run(std::span<const int32_t> tokens, std::span<float> logits, int first_logits);
  void Attention(int layer, int n_rows);
  void Layer(int layer, int n_rows);
  // cpu::MatMul, or cpu::MatMulInt8Activations with --cpu-activations int8.
  void MatMul(const Matrix& w, const float* bias, const float* x, int n_tokens, float* y);

  const ModelConfig config_;
  const ModelWeights& weights_;
  ThreadPool pool_;
  const cpu::CpuIsa isa_;  // resolved: never kAuto
  const cpu::Activations activations_;
  cpu::RotaryTable rotary_;
  RunState state_;
  double attention_seconds_ = 0;  // of the last step
};

}  // namespace sinkserve
