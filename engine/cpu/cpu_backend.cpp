#include "engine/cpu/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <new>

#include "absl/strings/str_cat.h"

namespace sinkserve {

CpuBackend::CpuBackend(const ModelConfig& config, const ModelWeights& weights, int num_threads,
                       cpu::CpuIsa isa, cpu::Activations activations)
    : config_(config),
      weights_(weights),
      pool_(num_threads),
      isa_(cpu::ResolveCpuIsa(isa)),
      activations_(activations),
      rotary_(config.rotary_ndims, config.rotary_base) {}

std::string CpuBackend::name() const {
  if (activations_ == cpu::Activations::kInt8) {
    return absl::StrCat("cpu (", pool_.size(), " threads, ", cpu::Int8ActivationsIsaName(isa_),
                        ", int8 activations)");
  }
  return absl::StrCat("cpu (", pool_.size(), " threads, ", cpu::CpuIsaName(isa_), ")");
}

void CpuBackend::MatMul(const Matrix& w, const float* bias, const float* x, int n_tokens,
                        float* y) {
  if (activations_ == cpu::Activations::kInt8) {
    cpu::MatMulInt8Activations(w, bias, x, n_tokens, y, pool_, isa_);
  } else {
    cpu::MatMul(w, bias, x, n_tokens, y, pool_, isa_);
  }
}

namespace {

// A cache the allocator cannot satisfy is RESOURCE_EXHAUSTED for the request that asked for it,
// never a crash of the server (the CUDA backend's allocator answers the same way).
template <typename MakeCache>
absl::StatusOr<std::unique_ptr<KvCache>> AllocateCache(const char* what, MakeCache make_cache) {
  try {
    return make_cache();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cache memory: out of host memory allocating a ", what, " KV cache"));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvCache>> CpuBackend::NewDenseCache(int capacity_tokens) const {
  return AllocateCache("dense", [&] {
    return std::make_unique<DenseKvCache>(
        KvShape{config_.num_layers, config_.num_heads, config_.head_dim}, capacity_tokens);
  });
}

absl::StatusOr<std::unique_ptr<KvCache>> CpuBackend::NewCache(const CachePolicy& policy) const {
  return AllocateCache(policy.Describe().c_str(), [&] {
    return NewKvCache(KvShape{config_.num_layers, config_.num_heads, config_.head_dim}, policy,
                      config_.max_position_embeddings);
  });
}

void CpuBackend::ReserveRankRotary(int64_t ranks) {
  const size_t row = 2 * static_cast<size_t>(config_.rotary_ndims);
  const int64_t have = static_cast<int64_t>(state_.rank_rotary.size() / row);
  if (ranks <= have) return;
  state_.rank_rotary.resize(ranks * row);
  for (int64_t rank = have; rank < ranks; ++rank) {
    float* cos = &state_.rank_rotary[rank * row];
    rotary_.Compute(rank, cos, cos + config_.rotary_ndims);
  }
}

void CpuBackend::Reserve(int n, int cache_capacity) {
  const size_t h = config_.hidden_size;
  if (n > state_.tokens) {
    state_.tokens = n;
    state_.residual.resize(n * h);
    state_.normed.resize(n * h);
    state_.qkv.resize(n * 3 * h);
    state_.attention.resize(n * h);
    state_.attn_out.resize(n * h);
    state_.mlp_hidden.resize(static_cast<size_t>(n) * config_.intermediate_size);
    state_.mlp_out.resize(n * h);
    state_.rotary.resize(static_cast<size_t>(n) * (kMaxVisibleSpans + 1) * 2 *
                         config_.rotary_ndims);
    state_.spans.resize(n);
  }
  state_.scores.resize(pool_.size());
  state_.queries.assign(pool_.size(), std::vector<float>(config_.head_dim));
  for (std::vector<float>& scores : state_.scores) {
    if (static_cast<int>(scores.size()) < cache_capacity) scores.resize(cache_capacity);
  }
}

absl::Status CpuBackend::Forward(std::span<const int32_t> tokens, KvCache& cache,
                                 std::span<float> logits, bool all_logits) {
  const int n = static_cast<int>(tokens.size());
  if (absl::Status status = CheckForwardArgs(tokens, logits, all_logits, config_.vocab_size);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = cache.BeginStep(n); !status.ok()) return status;
  state_.row_cache.assign(n, &cache);
  state_.row_index.resize(n);
  for (int t = 0; t < n; ++t) state_.row_index[t] = t;
  Run(tokens, logits, all_logits ? 0 : n - 1);
  cache.EndStep();
  return absl::OkStatus();
}

absl::Status CpuBackend::ForwardBatch(std::span<const int32_t> tokens,
                                      std::span<KvCache* const> caches, std::span<float> logits) {
  const int n = static_cast<int>(tokens.size());
  // Check everything before touching any cache: a bad row fails the batch, changing nothing.
  if (absl::Status status = CheckBatchArgs(tokens, caches, logits, config_.vocab_size);
      !status.ok()) {
    return status;
  }
  for (int i = 0; i < n; ++i) {
    if (absl::Status status = caches[i]->BeginStep(1); !status.ok()) return status;
  }
  state_.row_cache.assign(caches.begin(), caches.end());
  state_.row_index.assign(n, 0);
  Run(tokens, logits, 0);
  for (KvCache* cache : caches) cache->EndStep();
  return absl::OkStatus();
}

void CpuBackend::Run(std::span<const int32_t> tokens, std::span<float> logits, int first_logits) {
  const int n = static_cast<int>(tokens.size());
  int capacity = 0;
  for (const KvCache* cache : state_.row_cache)
    capacity = std::max(capacity, cache->capacity_tokens());
  Reserve(n, capacity);
  if (state_.spans.size() < static_cast<size_t>(n)) state_.spans.resize(n);

  // Positions are the same in every layer: rotary tables once per step.
  const int rot = config_.rotary_ndims;
  int64_t ranks_needed = 0;
  for (int t = 0; t < n; ++t) {
    const KvCache& cache = *state_.row_cache[t];
    const int i = state_.row_index[t];
    cache.Visible(i, &state_.spans[t]);
    float* table = &state_.rotary[static_cast<size_t>(t) * (kMaxVisibleSpans + 1) * 2 * rot];
    if (cache.NewKeyPosition(i) >= 0) rotary_.Compute(cache.NewKeyPosition(i), table, table + rot);
    for (const KvSpan& span : state_.spans[t]) {
      if (span.key_rank_begin >= 0) {
        ranks_needed = std::max(ranks_needed, span.key_rank_begin + span.num_slots);
      }
    }
    for (size_t s = 0; s < state_.spans[t].size() && s < kMaxVisibleSpans; ++s) {
      float* span_table = table + (s + 1) * 2 * rot;
      rotary_.Compute(state_.spans[t][s].query_position, span_table, span_table + rot);
    }
  }
  ReserveRankRotary(ranks_needed);

  const int h = config_.hidden_size;
  for (int t = 0; t < n; ++t) {
    cpu::EmbeddingRow(weights_.embed_in, tokens[t], &state_.residual[static_cast<size_t>(t) * h]);
  }
  attention_seconds_ = 0;
  for (int layer = 0; layer < config_.num_layers; ++layer) Layer(layer, n);

  // Final LayerNorm and the LM head, for rows first_logits..n-1.
  for (int t = first_logits; t < n; ++t) {
    cpu::LayerNorm(&state_.residual[static_cast<size_t>(t) * h], weights_.final_norm_weight.data(),
                   weights_.final_norm_bias.data(), h, config_.layer_norm_eps,
                   &state_.normed[static_cast<size_t>(t - first_logits) * h]);
  }
  MatMul(weights_.embed_out, nullptr, state_.normed.data(), n - first_logits, logits.data());
}

void CpuBackend::Layer(int layer, int n) {
  const LayerWeights& w = weights_.layers[layer];
  const int h = config_.hidden_size;
  const float eps = config_.layer_norm_eps;
  float* x = state_.residual.data();
  float* normed = state_.normed.data();

  for (int t = 0; t < n; ++t) {
    cpu::LayerNorm(x + t * h, w.input_norm_weight.data(), w.input_norm_bias.data(), h, eps,
                   normed + t * h);
  }
  MatMul(w.qkv, w.qkv_bias.data(), normed, n, state_.qkv.data());
  const auto attention_start = std::chrono::steady_clock::now();
  Attention(layer, n);
  attention_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - attention_start).count();
  MatMul(w.attn_out, w.attn_out_bias.data(), state_.attention.data(), n, state_.attn_out.data());

  const int f = config_.intermediate_size;
  float* attn_out = state_.attn_out.data();
  float* mlp_out = state_.mlp_out.data();
  if (config_.parallel_residual) {
    // HF: x = mlp(ln2(x)) + attn(ln1(x)) + x, summed in that order.
    for (int t = 0; t < n; ++t) {
      cpu::LayerNorm(x + t * h, w.post_norm_weight.data(), w.post_norm_bias.data(), h, eps,
                     normed + t * h);
    }
  } else {
    // HF: a = attn(ln1(x)) + x; x = mlp(ln2(a)) + a.
    for (int i = 0; i < n * h; ++i) attn_out[i] += x[i];
    for (int t = 0; t < n; ++t) {
      cpu::LayerNorm(attn_out + t * h, w.post_norm_weight.data(), w.post_norm_bias.data(), h, eps,
                     normed + t * h);
    }
  }
  MatMul(w.mlp_up, w.mlp_up_bias.data(), normed, n, state_.mlp_hidden.data());
  cpu::Gelu(config_.activation, state_.mlp_hidden.data(), static_cast<int64_t>(n) * f);
  MatMul(w.mlp_down, w.mlp_down_bias.data(), state_.mlp_hidden.data(), n, mlp_out);
  if (config_.parallel_residual) {
    for (int i = 0; i < n * h; ++i) x[i] = (mlp_out[i] + attn_out[i]) + x[i];
  } else {
    for (int i = 0; i < n * h; ++i) x[i] = mlp_out[i] + attn_out[i];
  }
}

void CpuBackend::Attention(int layer, int n) {
  const int heads = config_.num_heads;
  const int d = config_.head_dim;
  const int rot = config_.rotary_ndims;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const size_t table_stride = static_cast<size_t>(kMaxVisibleSpans + 1) * 2 * rot;

  // Store each new key (rotated at its position, if the cache keeps keys rotated) and value.
  for (int t = 0; t < n; ++t) {
    const float* table = &state_.rotary[t * table_stride];
    KvCache& cache = *state_.row_cache[t];
    const bool rotate = cache.NewKeyPosition(state_.row_index[t]) >= 0;
    const int slot = cache.NewSlot(state_.row_index[t]);
    for (int head = 0; head < heads; ++head) {
      float* q_k_v = &state_.qkv[(static_cast<size_t>(t) * heads + head) * 3 * d];
      float* key = cache.keys(layer, head) + static_cast<size_t>(slot) * d;
      float* value = cache.values(layer, head) + static_cast<size_t>(slot) * d;
      std::copy(q_k_v + d, q_k_v + 2 * d, key);
      if (rotate) cpu::ApplyRotary(key, rot, table, table + rot);
      std::copy(q_k_v + 2 * d, q_k_v + 3 * d, value);
    }
  }

  // One task per (token, head): scores = q·k·scale over the visible spans, softmax, Σ p·v.
  pool_.ParallelFor(n * heads, 1, [&](int64_t task_begin, int64_t task_end, int thread_index) {
    float* scores = state_.scores[thread_index].data();
    float* query = state_.queries[thread_index].data();
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int t = static_cast<int>(task / heads);
      const int head = static_cast<int>(task % heads);
      const float* q = &state_.qkv[(static_cast<size_t>(t) * heads + head) * 3 * d];
      const KvCache& cache = *state_.row_cache[t];
      const float* keys = cache.keys(layer, head);
      const float* values = cache.values(layer, head);
      const std::vector<KvSpan>& spans = state_.spans[t];

      float max_score = -std::numeric_limits<float>::infinity();
      int count = 0;
      for (size_t s = 0; s < spans.size(); ++s) {
        const float* table = &state_.rotary[t * table_stride + (s + 1) * 2 * rot];
        std::copy(q, q + d, query);
        cpu::ApplyRotary(query, rot, table, table + rot);
        const KvSpan& span = spans[s];
        const float* span_keys = keys + static_cast<size_t>(span.begin_slot) * d;
        if (span.key_rank_begin < 0) {
          cpu::AttentionScores(query, span_keys, span.num_slots, d, scale, scores + count, isa_);
        } else {
          cpu::RotatedKeyScores(query, span_keys, span.num_slots, d, rot,
                                &state_.rank_rotary[span.key_rank_begin * 2 * rot], scale,
                                scores + count, isa_);
        }
        for (int j = 0; j < span.num_slots; ++j) max_score = std::max(max_score, scores[count + j]);
        count += span.num_slots;
      }
      float sum = 0.0f;
      for (int j = 0; j < count; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      const float inv_sum = 1.0f / sum;
      float* out = &state_.attention[(static_cast<size_t>(t) * heads + head) * d];
      std::fill(out, out + d, 0.0f);
      for (int j = 0; j < count; ++j) scores[j] *= inv_sum;
      count = 0;
      for (const KvSpan& span : spans) {
        cpu::WeightedSum(scores + count, values + static_cast<size_t>(span.begin_slot) * d,
                         span.num_slots, d, out, isa_);
        count += span.num_slots;
      }
    }
  });
}

}  // namespace sinkserve
