#include "engine/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/cuda/device_memory.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/kernels.h"
#include "common/base/half.h"
#include "engine/format/quant.h"
#include "common/base/status_macros.h"
#include "common/base/thread_pool.h"

namespace sinkserve {
namespace cuda {
namespace {

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA error in ", what, ": ", cudaGetErrorString(error)));
}

#define CUDA_RETURN_IF_ERROR(expr) RETURN_IF_ERROR(CudaStatus((expr), #expr))

// A session's keys and values on the device: [layers][2][heads][capacity][head_dim] fp16, one
// block of the backend's pool, returned to the pool (not to the driver) with the cache.
class DeviceKvStorage final : public KvStorage {
 public:
  DeviceKvStorage(DeviceAllocator* allocator, void* data, size_t bytes, const void* owner,
                  cudaStream_t stream)
      : allocator_(allocator), data_(data), bytes_(bytes), owner_(owner), stream_(stream) {}
  ~DeviceKvStorage() override { allocator_->Release(data_, bytes_); }
  uint64_t bytes() const override { return bytes_; }
  std::string format() const override {
    return "cuda fp16 [layers][2][heads][capacity][head_dim]";
  }
  // On the backend's stream, so a copy follows the steps that wrote the cache.
  absl::Status CopyToHost(std::span<std::byte> host) const override {
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host.data(), data_, host.size(), cudaMemcpyDeviceToHost, stream_));
    return CudaStatus(cudaStreamSynchronize(stream_), "saving a KV cache");
  }
  absl::Status CopyFromHost(std::span<const std::byte> host) override {
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(data_, host.data(), host.size(), cudaMemcpyHostToDevice, stream_));
    return CudaStatus(cudaStreamSynchronize(stream_), "restoring a KV cache");
  }
  Half* data() const { return static_cast<Half*>(data_); }
  const void* owner() const { return owner_; }

 private:
  DeviceAllocator* allocator_;
  void* data_;
  size_t bytes_;
  const void* owner_;  // the backend that made it
  cudaStream_t stream_;
};

struct DeviceMatrix {
  DeviceMatrixView view;
  DeviceArray<std::byte> data;
  MappedHostBuffer host_data;  // instead of `data` for a matrix kept in host memory
  DeviceArray<float> absmax;
  DeviceArray<uint8_t> absmax_codes;
  DeviceArray<float> absmax_block_scale;
};

struct DeviceLayer {
  DeviceMatrix qkv, attn_out, mlp_up, mlp_down;
  DeviceArray<float> input_norm_weight, input_norm_bias, post_norm_weight, post_norm_bias;
  DeviceArray<float> qkv_bias, attn_out_bias, mlp_up_bias, mlp_down_bias;
};

template <typename T>
absl::StatusOr<DeviceArray<T>> Upload(DeviceAllocator& allocator, const T* host, size_t size,
                                      const std::string& what) {
  ASSIGN_OR_RETURN(DeviceArray<T> array, DeviceArray<T>::Make(allocator, size, what));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(array.get(), host, size * sizeof(T), cudaMemcpyHostToDevice));
  return array;
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& config, const CudaOptions& options)
      : config_(config), options_(options) {}
  ~CudaBackend() override;

  absl::Status Init(const ModelWeights& weights);

  absl::Status Forward(std::span<const int32_t> tokens, KvCache& cache, std::span<float> logits,
                       bool all_logits) override;
  absl::Status ForwardBatch(std::span<const int32_t> tokens, std::span<KvCache* const> caches,
                            std::span<float> logits) override;
  absl::Status ForwardBatchGreedy(std::span<const int32_t> tokens,
                                  std::span<KvCache* const> caches, std::span<float> logits,
                                  std::span<int32_t> next) override;
  absl::StatusOr<std::unique_ptr<KvCache>> NewDenseCache(int capacity_tokens) const override;
  absl::StatusOr<std::unique_ptr<KvCache>> NewCache(const CachePolicy& policy) const override;
  std::string name() const override { return name_; }
  double last_step_attention_seconds() const override { return attention_seconds_; }
  int64_t graph_launches() const { return graph_launches_; }
  DeviceMemoryStats device_memory() const override;

 private:
  absl::StatusOr<DeviceMatrix> UploadMatrix(const Matrix& matrix, const std::string& what,
                                            bool on_host = false);
  absl::Status UploadLayer(const LayerWeights& layer, int index);
  template <typename T>
  absl::Status Grow(DeviceArray<T>& array, size_t size, const char* what);
  absl::Status Reserve(int n_rows, int n_logits, int max_blocks);
  absl::Status EnsureRotary(int64_t positions);
  // Describes the rows of a step for the attention kernel and reserves its buffers (logits for
  // n_logits rows).
  absl::Status PrepareRows(std::span<KvCache* const> row_caches, std::span<const int> row_index,
                           int n_logits);
  // The forward over the prepared rows; logits of rows first_logits.. into `logits`, or, when
  // `next` is not empty, each row's argmax into `next` (logits stay on the device).
  absl::Status Run(std::span<const int32_t> tokens, std::span<float> logits, int first_logits,
                   std::span<int32_t> next = {});
  // Enqueues the kernels of a step (embedding → layers → LM head into logits_, and the argmax
  // into next_ when greedy) on stream_.
  absl::Status Enqueue(int n_rows, int first_logits, bool timed, bool greedy);
  // A batched decode step; logits or greedy ids as in Run.
  absl::Status Step(std::span<const int32_t> tokens, std::span<KvCache* const> caches,
                    std::span<float> logits, std::span<int32_t> next);
  absl::Status Layer(int layer, int n_rows, bool timed);
  // Enqueues a step from its CUDA graph when it has one, capturing it the second time its
  // shape is seen; false when the step must be enqueued kernel by kernel.
  absl::StatusOr<bool> LaunchGraph(int n_rows, int first_logits, bool timed, bool greedy);
  // Graphs hold the addresses of the step buffers and the rotary table: dropped when those move.
  void DropGraphs();

  const ModelConfig config_;
  const CudaOptions options_;
  std::string name_;
  uint64_t device_total_bytes_ = 0;
  std::unique_ptr<DeviceAllocator> allocator_ = std::make_unique<DeviceAllocator>();
  cudaStream_t stream_ = nullptr;
  Gemm gemm_;

  DeviceMatrix embed_in_, embed_out_;
  bool tied_embeddings_ = false;
  std::vector<DeviceLayer> layers_;
  DeviceArray<float> final_norm_weight_, final_norm_bias_;
  DeviceArray<float> dynamic_map_;  // bnb's map, for double-quantized NF4 absmax

  // cos/sin per position, [positions][2][rotary_ndims], grown on demand.
  DeviceArray<float> rotary_;
  int64_t rotary_positions_ = 0;

  // Step state (run state, docs/conventions.md §3), grown to the largest step seen.
  int max_blocks_ = 0;  // of the current step
  DeviceArray<int32_t> tokens_, next_, arrivals_;
  DeviceArray<AttentionRow> rows_;
  DeviceArray<float> x_, qkv_, attn_out_, mlp_hidden_, mlp_out_, partials_, logits_;
  DeviceArray<Half> normed_, post_normed_, attn_, mlp_act_;
  std::vector<AttentionRow> host_rows_;
  std::vector<KvSpan> spans_;

  struct GraphKey {
    int n_rows, n_logits, max_blocks;
    bool timed, greedy;
    auto operator<=>(const GraphKey&) const = default;
  };
  struct StepGraph {
    int seen = 0;
    cudaGraphExec_t exec = nullptr;
  };
  static constexpr size_t kMaxGraphShapes = 256;  // beyond: steps of new shapes run eagerly
  std::map<GraphKey, StepGraph> graphs_;
  bool graphs_enabled_ = true;
  bool programmatic_ = false;  // CudaOptions::programmatic_launch, where the GPU and build allow
  bool capturing_ = false;  // Enqueue is being captured into a graph
  int64_t graph_launches_ = 0;

  std::vector<cudaEvent_t> attention_events_;  // [layers][start, stop]
  int64_t steps_ = 0;
  double attention_seconds_ = 0;
};

CudaBackend::~CudaBackend() {
  DropGraphs();
  for (cudaEvent_t event : attention_events_) cudaEventDestroy(event);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaBackend::Init(const ModelWeights& weights) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  cudaDeviceProp properties{};
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&properties, options_.device));
  name_ = absl::StrCat("cuda (", properties.name, ", sm_", properties.major, properties.minor,
                       ", ", properties.multiProcessorCount, " SMs)");
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  device_total_bytes_ = total_bytes;

  const int h = config_.hidden_size, f = config_.intermediate_size, d = config_.head_dim;
  if (h % 32 != 0 || f % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA backend needs hidden_size and intermediate_size to be multiples of 32 (got ",
        h, " and ", f, "); use --backend cpu"));
  }
  if (d > kAttentionMaxHeadDim || d % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA backend needs a head_dim that is a multiple of 8, at most ",
        kAttentionMaxHeadDim, " (got ",
        d, "); use --backend cpu"));
  }
  graphs_enabled_ = options_.graphs;
  programmatic_ = options_.programmatic_launch && ProgrammaticLaunchAvailable();
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  attention_events_.resize(2 * config_.num_layers);
  for (cudaEvent_t& event : attention_events_) CUDA_RETURN_IF_ERROR(cudaEventCreate(&event));

  ASSIGN_OR_RETURN(dynamic_map_, Upload(*allocator_, kDynamicMap, 256, "the NF4 dynamic map"));
  tied_embeddings_ = weights.embed_out.storage() == weights.embed_in.storage();
  // Untied, the input embeddings are only gathered (a row per token): they can stay on the host.
  ASSIGN_OR_RETURN(embed_in_, UploadMatrix(weights.embed_in, "embed_in",
                                           options_.embeddings_on_host && !tied_embeddings_));
  if (!tied_embeddings_) {
    ASSIGN_OR_RETURN(embed_out_, UploadMatrix(weights.embed_out, "embed_out"));
  }
  for (int i = 0; i < config_.num_layers; ++i) RETURN_IF_ERROR(UploadLayer(weights.layers[i], i));
  ASSIGN_OR_RETURN(final_norm_weight_, Upload(*allocator_, weights.final_norm_weight.data(), h,
                                              "final_layer_norm"));
  ASSIGN_OR_RETURN(final_norm_bias_,
                   Upload(*allocator_, weights.final_norm_bias.data(), h, "final_layer_norm"));

  size_t largest_quantized = 0;
  int64_t widest_quantized = 0;
  auto consider = [&](const DeviceMatrix& m) {
    if (m.view.format != DeviceMatrixView::Format::kF16) {
      largest_quantized = std::max<size_t>(largest_quantized, m.view.rows * m.view.cols);
      widest_quantized = std::max(widest_quantized, m.view.cols);
    }
  };
  consider(embed_in_);
  consider(embed_out_);
  for (const DeviceLayer& layer : layers_) {
    for (const DeviceMatrix* m : {&layer.qkv, &layer.attn_out, &layer.mlp_up, &layer.mlp_down}) {
      consider(*m);
    }
  }
  RETURN_IF_ERROR(
      gemm_.Init(*allocator_, Gemm::ScratchElements(largest_quantized, widest_quantized)));
  return EnsureRotary(std::max(config_.max_position_embeddings, 4096));
}

absl::StatusOr<DeviceMatrix> CudaBackend::UploadMatrix(const Matrix& matrix,
                                                       const std::string& what, bool on_host) {
  DeviceMatrix m;
  // The codes / values: on the device, or in mapped host memory when on_host (falling back to
  // the device where pinning fails, e.g. a container's locked-memory limit).
  auto place = [&](const std::byte* bytes, size_t n) -> absl::Status {
    if (on_host) {
      absl::StatusOr<MappedHostBuffer> host = MappedHostBuffer::Make(bytes, n, what);
      if (host.ok()) {
        m.host_data = std::move(*host);
        return absl::OkStatus();
      }
    }
    ASSIGN_OR_RETURN(m.data, Upload(*allocator_, bytes, n, what));
    return absl::OkStatus();
  };
  m.view.rows = matrix.rows;
  m.view.cols = matrix.cols;
  const size_t numel = static_cast<size_t>(matrix.rows * matrix.cols);
  switch (matrix.quant) {
    case QuantFormat::kInt8: {
      m.view.format = DeviceMatrixView::Format::kInt8;
      RETURN_IF_ERROR(place(reinterpret_cast<const std::byte*>(matrix.int8->codes.data()), numel));
      ASSIGN_OR_RETURN(m.absmax, Upload(*allocator_, matrix.int8->row_absmax.data(),
                                        matrix.int8->row_absmax.size(), what));
      break;
    }
    case QuantFormat::kNf4: {
      m.view.format = DeviceMatrixView::Format::kNf4;
      RETURN_IF_ERROR(place(reinterpret_cast<const std::byte*>(matrix.nf4->codes.data()),
                            matrix.nf4->codes.size()));
      if (matrix.nf4_absmax != nullptr) {
        ASSIGN_OR_RETURN(m.absmax_codes, Upload(*allocator_, matrix.nf4_absmax->codes.data(),
                                                matrix.nf4_absmax->codes.size(), what));
        ASSIGN_OR_RETURN(m.absmax_block_scale,
                         Upload(*allocator_, matrix.nf4_absmax->block_scale.data(),
                                matrix.nf4_absmax->block_scale.size(), what));
        m.view.absmax_offset = matrix.nf4_absmax->offset;
      } else {
        ASSIGN_OR_RETURN(m.absmax, Upload(*allocator_, matrix.nf4->block_absmax.data(),
                                          matrix.nf4->block_absmax.size(), what));
      }
      break;
    }
    case QuantFormat::kNone: {
      m.view.format = DeviceMatrixView::Format::kF16;
      if (matrix.dtype == DType::kF16) {
        RETURN_IF_ERROR(place(matrix.data, numel * 2));
        break;
      }
      // F32 / BF16 checkpoints: converted to fp16 on the host, in parallel (a pool for the
      // upload only: the backend holds no CPU threads while it serves).
      std::vector<uint16_t> staging(numel);
      ThreadPool pool(0);
      pool.ParallelFor(static_cast<int64_t>(numel), 1 << 16, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) {
          float value;
          if (matrix.dtype == DType::kF32) {
            std::memcpy(&value, matrix.data + 4 * i, 4);
          } else {
            uint16_t bits;
            std::memcpy(&bits, matrix.data + 2 * i, 2);
            value = Bf16ToFloat(bits);
          }
          staging[i] = FloatToF16(value);
        }
      });
      RETURN_IF_ERROR(place(reinterpret_cast<const std::byte*>(staging.data()), numel * 2));
      break;
    }
  }
  m.view.data = m.host_data.device_pointer() != nullptr ? m.host_data.device_pointer()
                                                        : m.data.get();
  m.view.absmax = m.absmax.get();
  m.view.absmax_codes = m.absmax_codes.get();
  m.view.absmax_block_scale = m.absmax_block_scale.get();
  m.view.dynamic_map = dynamic_map_.get();
  return m;
}

absl::Status CudaBackend::UploadLayer(const LayerWeights& w, int index) {
  const std::string name = absl::StrCat("layer ", index);
  DeviceLayer layer;
  ASSIGN_OR_RETURN(layer.qkv, UploadMatrix(w.qkv, name + " query_key_value"));
  ASSIGN_OR_RETURN(layer.attn_out, UploadMatrix(w.attn_out, name + " attention.dense"));
  ASSIGN_OR_RETURN(layer.mlp_up, UploadMatrix(w.mlp_up, name + " dense_h_to_4h"));
  ASSIGN_OR_RETURN(layer.mlp_down, UploadMatrix(w.mlp_down, name + " dense_4h_to_h"));
  auto vector = [&](const std::vector<float>& v) {
    return Upload(*allocator_, v.data(), v.size(), name);
  };
  ASSIGN_OR_RETURN(layer.input_norm_weight, vector(w.input_norm_weight));
  ASSIGN_OR_RETURN(layer.input_norm_bias, vector(w.input_norm_bias));
  ASSIGN_OR_RETURN(layer.post_norm_weight, vector(w.post_norm_weight));
  ASSIGN_OR_RETURN(layer.post_norm_bias, vector(w.post_norm_bias));
  ASSIGN_OR_RETURN(layer.qkv_bias, vector(w.qkv_bias));
  ASSIGN_OR_RETURN(layer.attn_out_bias, vector(w.attn_out_bias));
  ASSIGN_OR_RETURN(layer.mlp_up_bias, vector(w.mlp_up_bias));
  ASSIGN_OR_RETURN(layer.mlp_down_bias, vector(w.mlp_down_bias));
  layers_.push_back(std::move(layer));
  return absl::OkStatus();
}

absl::Status CudaBackend::EnsureRotary(int64_t positions) {
  if (positions <= rotary_positions_) return absl::OkStatus();
  positions = std::max<int64_t>(positions, 2 * rotary_positions_);
  const int rot = config_.rotary_ndims;
  std::vector<float> table(static_cast<size_t>(positions) * 2 * rot);
  const cpu::RotaryTable rotary(rot, config_.rotary_base);
  for (int64_t p = 0; p < positions; ++p) {
    float* row = &table[static_cast<size_t>(p) * 2 * rot];
    rotary.Compute(p, row, row + rot);
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));  // the old table may be in use
  DropGraphs();
  ASSIGN_OR_RETURN(rotary_, Upload(*allocator_, table.data(), table.size(), "the rotary table"));
  rotary_positions_ = positions;
  return absl::OkStatus();
}

// A step array grown to at least `size` elements (at least doubling, so a batch that grows a
// row at a time reallocates rarely). The old array is freed first (the stream is idle), so
// growing never holds both; graphs holding its address are dropped.
template <typename T>
absl::Status CudaBackend::Grow(DeviceArray<T>& array, size_t size, const char* what) {
  if (array.size() >= size) return absl::OkStatus();
  size = std::max(size, 2 * array.size());
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  DropGraphs();
  array.Reset();
  ASSIGN_OR_RETURN(array, DeviceArray<T>::Make(*allocator_, size, what));
  return absl::OkStatus();
}

absl::Status CudaBackend::Reserve(int n, int n_logits, int max_blocks) {
  const size_t h = config_.hidden_size, f = config_.intermediate_size;
  const size_t heads = config_.num_heads, rows = n;
  const char* what = "step activations";
  RETURN_IF_ERROR(Grow(tokens_, rows, what));
  RETURN_IF_ERROR(Grow(next_, rows, what));
  RETURN_IF_ERROR(Grow(rows_, rows, what));
  RETURN_IF_ERROR(Grow(x_, rows * h, what));
  RETURN_IF_ERROR(Grow(qkv_, rows * 3 * h, what));
  RETURN_IF_ERROR(Grow(attn_out_, rows * h, what));
  RETURN_IF_ERROR(Grow(mlp_hidden_, rows * f, what));
  RETURN_IF_ERROR(Grow(mlp_out_, rows * h, what));
  // Only the rows whose logits are asked for (one of a prompt chunk's).
  RETURN_IF_ERROR(Grow(logits_, static_cast<size_t>(n_logits) * config_.vocab_size, what));
  RETURN_IF_ERROR(Grow(normed_, rows * h, what));
  RETURN_IF_ERROR(Grow(post_normed_, rows * h, what));
  RETURN_IF_ERROR(Grow(attn_, rows * h, what));
  RETURN_IF_ERROR(Grow(mlp_act_, rows * f, what));
  RETURN_IF_ERROR(Grow(partials_, rows * heads * max_blocks * (config_.head_dim + 2),
                       "attention partials"));
  if (arrivals_.size() < rows * heads) {
    RETURN_IF_ERROR(Grow(arrivals_, rows * heads, "attention partials"));
    // On the step's stream: it does not wait for the default stream, so a plain cudaMemset
    // would not be ordered before the attention kernel. A failed memset leaves no counters.
    const cudaError_t zeroed = cudaMemsetAsync(arrivals_.get(), 0, arrivals_.bytes(), stream_);
    if (zeroed != cudaSuccess) {
      arrivals_.Reset();
      return CudaStatus(zeroed, "zeroing the attention counters");
    }
  }
  return absl::OkStatus();
}

DeviceMemoryStats CudaBackend::device_memory() const {
  DeviceMemoryStats stats;
  stats.used_bytes = allocator_->used_bytes();
  stats.peak_bytes = allocator_->peak_bytes();
  stats.total_bytes = device_total_bytes_;
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) stats.free_bytes = free_bytes;
  return stats;
}

absl::StatusOr<std::unique_ptr<KvCache>> CudaBackend::NewCache(const CachePolicy& policy) const {
  RETURN_IF_ERROR(policy.Validate());
  const KvShape shape{config_.num_layers, config_.num_heads, config_.head_dim};
  const int capacity = policy.CapacityTokens(config_.max_position_embeddings);
  const size_t bytes = static_cast<size_t>(shape.num_layers) * 2 * shape.num_heads * capacity *
                       shape.head_dim * sizeof(Half);
  ASSIGN_OR_RETURN(void* block,
                   allocator_->Acquire(bytes, absl::StrCat("a KV cache, ", policy.Describe())));
  DeviceAllocator* allocator = allocator_.get();
  const void* owner = this;
  return NewKvCache(shape, policy, config_.max_position_embeddings, [&](int) {
    return std::make_unique<DeviceKvStorage>(allocator, block, bytes, owner, stream_);
  });
}

absl::StatusOr<std::unique_ptr<KvCache>> CudaBackend::NewDenseCache(int capacity_tokens) const {
  CachePolicy policy;
  policy.kind = CachePolicy::Kind::kCachePolicyDense;
  policy.dense_capacity_tokens = capacity_tokens;
  return NewCache(policy);
}

absl::Status CudaBackend::PrepareRows(std::span<KvCache* const> row_caches,
                                      std::span<const int> row_index, int n_logits) {
  const int n = static_cast<int>(row_caches.size());
  host_rows_.resize(n);
  int64_t positions = 0;
  int max_keys = 0;
  for (int t = 0; t < n; ++t) {
    const KvCache& cache = *row_caches[t];
    const int i = row_index[t];
    AttentionRow& row = host_rows_[t];
    const auto* storage = static_cast<const DeviceKvStorage*>(cache.storage());
    row.kv = storage->data();
    row.capacity = cache.capacity_tokens();
    row.new_slot = cache.NewSlot(i);
    row.new_key_position = static_cast<int32_t>(cache.NewKeyPosition(i));
    positions = std::max<int64_t>(positions, row.new_key_position + 1);
    cache.Visible(i, &spans_);
    row.num_spans = static_cast<int32_t>(spans_.size());
    row.total_keys = 0;
    for (size_t s = 0; s < spans_.size(); ++s) {
      const KvSpan& span = spans_[s];
      row.spans[s] = AttentionSpan{span.begin_slot, span.num_slots,
                                   static_cast<int32_t>(span.query_position),
                                   static_cast<int32_t>(span.key_rank_begin)};
      row.total_keys += span.num_slots;
      positions = std::max<int64_t>(positions, span.query_position + 1);
      positions = std::max<int64_t>(positions, span.key_rank_begin + span.num_slots);
    }
    max_keys = std::max(max_keys, row.total_keys);
  }
  // Rounded up to a power of two: a step's graph then serves every cache length up to it (the
  // kernels skip key blocks past a row's keys and combine by each row's own key count).
  const int needed_blocks = (max_keys + kAttentionKeysPerBlock - 1) / kAttentionKeysPerBlock;
  max_blocks_ = 1;
  while (max_blocks_ < needed_blocks) max_blocks_ *= 2;
  RETURN_IF_ERROR(EnsureRotary(positions));
  return Reserve(n, n_logits, max_blocks_);
}

// A cache this backend can use: made by it (device storage of this backend).
absl::Status CheckCache(const KvCache& cache, const void* backend, int row) {
  const auto* storage = dynamic_cast<const DeviceKvStorage*>(cache.storage());
  if (storage == nullptr || storage->owner() != backend) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the cache of row ", row, " was not made by this CUDA backend (use its NewCache)"));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(std::span<const int32_t> tokens, KvCache& cache,
                                  std::span<float> logits, bool all_logits) {
  const int n = static_cast<int>(tokens.size());
  RETURN_IF_ERROR(CheckForwardArgs(tokens, logits, all_logits, config_.vocab_size));
  RETURN_IF_ERROR(CheckCache(cache, this, 0));
  RETURN_IF_ERROR(cache.BeginStep(n));
  std::vector<KvCache*> row_caches(n, &cache);
  std::vector<int> row_index(n);
  for (int t = 0; t < n; ++t) row_index[t] = t;
  RETURN_IF_ERROR(PrepareRows(row_caches, row_index, all_logits ? n : 1));
  RETURN_IF_ERROR(Run(tokens, logits, all_logits ? 0 : n - 1));
  cache.EndStep();
  return absl::OkStatus();
}

absl::Status CudaBackend::ForwardBatch(std::span<const int32_t> tokens,
                                       std::span<KvCache* const> caches,
                                       std::span<float> logits) {
  return Step(tokens, caches, logits, {});
}

absl::Status CudaBackend::ForwardBatchGreedy(std::span<const int32_t> tokens,
                                             std::span<KvCache* const> caches,
                                             std::span<float> logits, std::span<int32_t> next) {
  if (next.size() < tokens.size()) {
    return absl::InvalidArgumentError("next-token buffer too small for the batch");
  }
  return Step(tokens, caches, logits, next.first(tokens.size()));
}

absl::Status CudaBackend::Step(std::span<const int32_t> tokens, std::span<KvCache* const> caches,
                               std::span<float> logits, std::span<int32_t> next) {
  const int n = static_cast<int>(tokens.size());
  RETURN_IF_ERROR(CheckBatchArgs(tokens, caches, logits, config_.vocab_size));
  for (int i = 0; i < n; ++i) RETURN_IF_ERROR(CheckCache(*caches[i], this, i));
  for (KvCache* cache : caches) RETURN_IF_ERROR(cache->BeginStep(1));
  const std::vector<int> row_index(n, 0);
  RETURN_IF_ERROR(PrepareRows(caches, row_index, n));
  RETURN_IF_ERROR(Run(tokens, logits, 0, next));
  for (KvCache* cache : caches) cache->EndStep();
  return absl::OkStatus();
}

absl::Status CudaBackend::Run(std::span<const int32_t> tokens, std::span<float> logits,
                              int first_logits, std::span<int32_t> next) {
  const int n = static_cast<int>(tokens.size());
  cudaGetLastError();  // a consumed, non-sticky error of an earlier call is not this step's
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tokens_.get(), tokens.data(), n * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(rows_.get(), host_rows_.data(), n * sizeof(AttentionRow),
                                       cudaMemcpyHostToDevice, stream_));
  const bool timed =
      options_.attention_timing_every > 0 && steps_ % options_.attention_timing_every == 0;
  ++steps_;
  const bool greedy = !next.empty();
  ASSIGN_OR_RETURN(const bool launched, LaunchGraph(n, first_logits, timed, greedy));
  if (!launched) RETURN_IF_ERROR(Enqueue(n, first_logits, timed, greedy));
  CUDA_RETURN_IF_ERROR(cudaGetLastError());

  if (greedy) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(next.data(), next_.get(), n * sizeof(int32_t),
                                         cudaMemcpyDeviceToHost, stream_));
  } else {
    const int n_logits = n - first_logits;
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), logits_.get(),
                                         static_cast<size_t>(n_logits) * config_.vocab_size *
                                             sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (timed) {
    double seconds = 0;
    for (int layer = 0; layer < config_.num_layers; ++layer) {
      float ms = 0;
      const cudaError_t error = cudaEventElapsedTime(&ms, attention_events_[2 * layer],
                                                     attention_events_[2 * layer + 1]);
      if (error != cudaSuccess && launched) {
        // Event nodes of a graph that do not time on this driver: time eager steps instead.
        std::fprintf(stderr,
                     "warning: CUDA graphs turned off, their attention events do not time (%s)\n",
                     cudaGetErrorString(error));
        cudaGetLastError();  // not this backend's next step's error
        graphs_enabled_ = false;
        DropGraphs();
        return absl::OkStatus();  // this step keeps the previous attention time
      }
      CUDA_RETURN_IF_ERROR(error);
      seconds += ms * 1e-3;
    }
    attention_seconds_ = seconds;
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Enqueue(int n, int first_logits, bool timed, bool greedy) {
  const int h = config_.hidden_size;
  LaunchEmbedding(embed_in_.view, tokens_.get(), n, x_.get(), stream_);
  for (int layer = 0; layer < config_.num_layers; ++layer) RETURN_IF_ERROR(Layer(layer, n, timed));
  const int n_logits = n - first_logits;
  LaunchLayerNorm(x_.get() + static_cast<size_t>(first_logits) * h, n_logits, h,
                  config_.layer_norm_eps,
                  {final_norm_weight_.get(), final_norm_bias_.get(), normed_.get()}, stream_);
  const DeviceMatrix& head = tied_embeddings_ ? embed_in_ : embed_out_;
  RETURN_IF_ERROR(gemm_.Run(head.view, nullptr, normed_.get(), n_logits, logits_.get(), stream_,
                            {}, programmatic_));
  if (greedy) LaunchArgmax(logits_.get(), n_logits, config_.vocab_size, next_.get(), stream_);
  return absl::OkStatus();
}

absl::StatusOr<bool> CudaBackend::LaunchGraph(int n, int first_logits, bool timed, bool greedy) {
  if (!graphs_enabled_) return false;
  const GraphKey key{n, n - first_logits, max_blocks_, timed, greedy};
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    if (graphs_.size() >= kMaxGraphShapes) {  // forget the shapes seen only once
      std::erase_if(graphs_, [](const auto& entry) { return entry.second.exec == nullptr; });
    }
    if (graphs_.size() < kMaxGraphShapes) graphs_.emplace(key, StepGraph{1, nullptr});
    return false;
  }
  StepGraph& graph = it->second;
  if (graph.exec == nullptr) {
    if (++graph.seen < 2) return false;
    // Thread-local capture: other threads (metrics reading cudaMemGetInfo) stay unaffected.
    CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    const absl::Status enqueued = Enqueue(n, first_logits, timed, greedy);
    capturing_ = false;
    cudaGraph_t captured = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &captured);
    cudaError_t instantiated = cudaErrorStreamCaptureInvalidated;
    if (enqueued.ok() && ended == cudaSuccess) {
      instantiated = cudaGraphInstantiate(&graph.exec, captured, 0);
    }
    if (captured != nullptr) cudaGraphDestroy(captured);
    if (!enqueued.ok() || ended != cudaSuccess || instantiated != cudaSuccess) {
      cudaGetLastError();  // the failed capture's error is not the next step's
      graph.exec = nullptr;
      graphs_enabled_ = false;
      // Once per process; the engine has no logger, the server's stderr is its log.
      std::fprintf(stderr,
                   "warning: CUDA graphs turned off, capturing a step failed (%s); steps run "
                   "kernel by kernel\n",
                   !enqueued.ok()         ? std::string(enqueued.message()).c_str()
                   : ended != cudaSuccess ? cudaGetErrorString(ended)
                                          : cudaGetErrorString(instantiated));
      return false;
    }
  }
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graph.exec, stream_));
  ++graph_launches_;
  return true;
}

void CudaBackend::DropGraphs() {
  for (auto& [key, graph] : graphs_) {
    if (graph.exec != nullptr) cudaGraphExecDestroy(graph.exec);
  }
  graphs_.clear();
}

absl::Status CudaBackend::Layer(int index, int n, bool timed) {
  const DeviceLayer& w = layers_[index];
  const int h = config_.hidden_size;
  const float eps = config_.layer_norm_eps;
  const bool parallel = config_.parallel_residual;
  const LayerNormOutput input_norm{w.input_norm_weight.get(), w.input_norm_bias.get(),
                                   normed_.get()};
  const LayerNormOutput post_norm{w.post_norm_weight.get(), w.post_norm_bias.get(),
                                  post_normed_.get()};
  // Parallel residual: both norms read x, in one kernel.
  if (parallel) {
    LaunchLayerNorms(x_.get(), n, h, eps, input_norm, post_norm, stream_);
  } else {
    LaunchLayerNorm(x_.get(), n, h, eps, input_norm, stream_);
  }
  // Products launched programmatically (CudaOptions::programmatic_launch) only right after
  // another kernel: not after the attention's closing event record.
  const bool programmatic = programmatic_;
  RETURN_IF_ERROR(gemm_.Run(w.qkv.view, w.qkv_bias.get(), normed_.get(), n, qkv_.get(), stream_,
                            {}, programmatic));

  const AttentionShape shape{config_.num_heads, config_.head_dim, config_.rotary_ndims, index};
  // While capturing, external records: event nodes of the graph that still time (the flag is
  // invalid outside a capture).
  const unsigned record_flags = capturing_ ? cudaEventRecordExternal : cudaEventRecordDefault;
  if (timed) {
    CUDA_RETURN_IF_ERROR(
        cudaEventRecordWithFlags(attention_events_[2 * index], stream_, record_flags));
  }
  LaunchStoreKv(rows_.get(), n, shape, qkv_.get(), rotary_.get(), stream_);
  LaunchAttention(rows_.get(), n, max_blocks_, shape, qkv_.get(), rotary_.get(), partials_.get(),
                  arrivals_.get(), attn_.get(), stream_);
  if (timed) {
    CUDA_RETURN_IF_ERROR(
        cudaEventRecordWithFlags(attention_events_[2 * index + 1], stream_, record_flags));
  }

  RETURN_IF_ERROR(gemm_.Run(w.attn_out.view, w.attn_out_bias.get(), attn_.get(), n,
                            attn_out_.get(), stream_, {}, programmatic && !timed));
  if (!parallel) {
    LaunchAddInPlace(attn_out_.get(), x_.get(), static_cast<int64_t>(n) * h, stream_);
    LaunchLayerNorm(attn_out_.get(), n, h, eps, post_norm, stream_);
  }
  // GELU fused into the up projection, the residual into the down projection.
  RETURN_IF_ERROR(gemm_.Run(w.mlp_up.view, w.mlp_up_bias.get(), post_normed_.get(), n,
                            mlp_hidden_.get(), stream_,
                            GemvEpilogue::Gelu(mlp_act_.get(), config_.activation ==
                                                                   Activation::kActivationGeluTanh),
                            programmatic));
  return gemm_.Run(w.mlp_down.view, w.mlp_down_bias.get(), mlp_act_.get(), n, mlp_out_.get(),
                   stream_, GemvEpilogue::Residual(x_.get(), attn_out_.get(), parallel),
                   programmatic);
}

}  // namespace
}  // namespace cuda

absl::Status CudaAvailable() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("no usable CUDA device (", cudaGetErrorString(error),
                     "); check the NVIDIA driver (nvidia-smi), or use --backend cpu"));
  }
  if (count == 0) {
    return absl::UnavailableError("no CUDA device found; use --backend cpu");
  }
  return absl::OkStatus();
}

int64_t CudaGraphLaunches(const Backend& backend) {
  const auto* cuda = dynamic_cast<const cuda::CudaBackend*>(&backend);
  return cuda != nullptr ? cuda->graph_launches() : 0;
}

absl::StatusOr<std::unique_ptr<Backend>> NewCudaBackend(const ModelConfig& config,
                                                        const ModelWeights& weights,
                                                        const CudaOptions& options) {
  RETURN_IF_ERROR(CudaAvailable());
  auto backend = std::make_unique<cuda::CudaBackend>(config, options);
  RETURN_IF_ERROR(backend->Init(weights));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace sinkserve
