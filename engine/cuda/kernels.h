// The CUDA kernels of the GPT-NeoX forward, as plain launch functions (no CUDA types beyond
// cudaStream_t), so the host code that sequences them compiles with the host compiler.
//
// Activations: the residual stream and every matrix product's output are fp32; the inputs of
// matrix products (LayerNorm, attention and GELU outputs) are fp16. Weights are fp16, int8
// (per-row absmax) or NF4 (per-64 absmax, optionally double-quantized) — docs/formats.md. Every
// launch function only enqueues work on `stream`; the caller checks cudaGetLastError().
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sinkserve::cuda {

// fp16 values travel as their bits through host code.
using Half = uint16_t;

// A weight matrix [rows][cols] (y = W·x) as it sits on the device.
struct DeviceMatrixView {
  enum class Format : uint8_t { kF16, kInt8, kNf4 };
  Format format = Format::kF16;
  int64_t rows = 0;
  int64_t cols = 0;
  // kF16: Half[rows][cols]; kInt8: int8[rows][cols]; kNf4: uint8[rows·cols/2], element 2j in
  // the high nibble.
  const void* data = nullptr;
  // kInt8: absmax[rows]. kNf4: absmax[rows·cols/64] (null when double-quantized).
  const float* absmax = nullptr;
  // kNf4 double-quantized absmax: absmax[b] = dynamic_map[codes[b]]·block_scale[b/256] + offset.
  const uint8_t* absmax_codes = nullptr;
  const float* absmax_block_scale = nullptr;
  const float* dynamic_map = nullptr;  // [256]
  float absmax_offset = 0.0f;
};

// The most tokens the fused dequantize-and-multiply kernels take in one pass over the weights.
// Measured on an H100 (BENCHMARKS.md): at 16 tokens they are slower than cuBLASLt (fp16) and
// than dequantize + cuBLASLt (int8, NF4), since x is re-read per token from L1.
inline constexpr int kGemvMaxTokens = 8;

// What a matrix product does with each output v[t][r] = bias[r] + Σ_k W[r][k]·x[t][k]:
// store it, or fuse the kernel that would follow it (same arithmetic, bit for bit).
struct GemvEpilogue {
  enum class Kind : uint8_t {
    kStore,     // y[t][r] = v
    kGelu,      // gelu_out[t][r] = gelu(v) as fp16 (the MLP's up projection)
    kResidual,  // x[t][r] = (v + attn[t][r]) + x[t][r], or v + attn when !parallel (the end
                // of a layer: v is the MLP's output)
  };
  Kind kind = Kind::kStore;
  bool tanh_approximation = false;
  Half* gelu_out = nullptr;
  float* x = nullptr;
  const float* attn = nullptr;
  bool parallel = true;

  static GemvEpilogue Gelu(Half* out, bool tanh_approximation) {
    return {Kind::kGelu, tanh_approximation, out, nullptr, nullptr, true};
  }
  static GemvEpilogue Residual(float* x, const float* attn, bool parallel) {
    return {Kind::kResidual, false, nullptr, x, attn, parallel};
  }
};

// The product for t < n_tokens ≤ kGemvMaxTokens, x: [n][cols] fp16, y (kStore): [n][rows]
// fp32, bias: [rows] fp32 or null. Reads each weight once (16-byte loads) and dequantizes in
// registers with fp32 accumulation. Needs cols a multiple of 32 (one NF4 vector of 32
// elements then never straddles a 64-element block). `programmatic`: launched with
// programmatic dependent launch (sm_90+), its blocks start while the previous kernel (a
// LayerNorm, the attention or another product) finishes and prefetch their weights into L2.
void LaunchGemv(const DeviceMatrixView& w, const float* bias, const Half* x, int n_tokens,
                float* y, const GemvEpilogue& epilogue, bool programmatic, cudaStream_t stream);

// True when the current device is sm_90+ and this build's kernels for it come from compute_90
// or newer code (they then wait for their prerequisites); otherwise programmatic launches must
// not be used.
bool ProgrammaticLaunchAvailable();

// out = dequantize(rows [row_begin, row_begin + n_rows) of W) as fp16 [n_rows][cols] for int8
// / NF4 (larger batches then go through cuBLASLt, a slice of rows at a time).
void LaunchDequantize(const DeviceMatrixView& w, int64_t row_begin, int64_t n_rows, Half* out,
                      cudaStream_t stream);

// out[t][0..cols) = dequantize(table)[tokens[t]] as fp32.
void LaunchEmbedding(const DeviceMatrixView& table, const int32_t* tokens, int n_tokens,
                     float* out, cudaStream_t stream);

// One normalized copy of the rows: out[t] = LayerNorm(x[t])·weight + bias as fp16.
struct LayerNormOutput {
  const float* weight;
  const float* bias;
  Half* out;
};

// out[t] for t < n_rows, statistics in fp32 (two passes).
void LaunchLayerNorm(const float* x, int n_rows, int dim, float eps, const LayerNormOutput& first,
                     cudaStream_t stream);
// Two normalizations of the same rows in one pass over them (a parallel-residual layer's
// input_layernorm and post_attention_layernorm both read x).
void LaunchLayerNorms(const float* x, int n_rows, int dim, float eps,
                      const LayerNormOutput& first, const LayerNormOutput& second,
                      cudaStream_t stream);

// Sequential residual: a[i] += x[i] (a = attn(ln1 x) + x), then the caller normalizes a.
void LaunchAddInPlace(float* a, const float* x, int64_t n, cudaStream_t stream);

// The end of a layer, as GemvEpilogue::kResidual with mlp as v (for products through
// cuBLASLt).
void LaunchResidual(float* x, const float* mlp, const float* attn, int64_t n, bool parallel,
                    cudaStream_t stream);

// out[i] = gelu(in[i]) as fp16; tanh_approximation selects gelu_new/gelu_fast.
void LaunchGelu(const float* in, int64_t n, bool tanh_approximation, Half* out,
                cudaStream_t stream);

// What one query row of a step attends (the device form of KvCache::Visible).
struct AttentionSpan {
  int32_t begin_slot;
  int32_t num_slots;
  int32_t query_position;
  int32_t key_rank_begin;  // ≥ 0: keys stored un-rotated, key j rotated at this rank + j
};
inline constexpr int kAttentionMaxSpans = 4;

struct AttentionRow {
  Half* kv;                // the row's cache: [layers][2][heads][capacity][head_dim] fp16
  int32_t capacity;
  int32_t new_slot;        // where this row's key/value go
  int32_t new_key_position;  // rotate the stored key here; −1 = store un-rotated
  int32_t num_spans;
  int32_t total_keys;      // Σ num_slots
  AttentionSpan spans[kAttentionMaxSpans];
};

struct AttentionShape {
  int num_heads;
  int head_dim;
  int rotary_ndims;
  int layer;
};

// Keys per block of the split-key attention (flash-decoding: each block reduces its keys to
// (max, sum, Σ p·v), the last block of a (row, head) to finish combines them). 64 spreads a
// 260-token streaming cache over 5 blocks per head, so a batch-1 step still fills the GPU.
inline constexpr int kAttentionKeysPerBlock = 64;
inline constexpr int kAttentionMaxHeadDim = 256;

// Writes each row's new key (rotated at new_key_position when ≥ 0) and value into its cache.
// qkv: [n_rows][heads][3][head_dim] fp32; rotary: [positions][2][rotary_ndims] (cos, sin).
void LaunchStoreKv(const AttentionRow* rows, int n_rows, const AttentionShape& shape,
                   const float* qkv, const float* rotary, cudaStream_t stream);

// out[t][head·d + k] = softmax(q·K/√d)·V over row t's spans, as fp16, in one kernel.
// `partials` holds n_rows·heads·max_blocks·(head_dim + 2) floats, max_blocks ≥ ceil(max
// total_keys / 64) (blocks past a row's keys return at once); `arrivals` holds n_rows·heads
// ints, zero before the first launch (every launch leaves them zero). head_dim must be a
// multiple of 8 (16-byte loads) and at most kAttentionMaxHeadDim.
void LaunchAttention(const AttentionRow* rows, int n_rows, int max_blocks,
                     const AttentionShape& shape, const float* qkv, const float* rotary,
                     float* partials, int* arrivals, Half* out, cudaStream_t stream);

// next[t] = argmax over logits[t][0..vocab) for t < n_rows: the lowest index among equal
// maxima (as std::max_element), one block per row.
void LaunchArgmax(const float* logits, int n_rows, int vocab, int32_t* next, cudaStream_t stream);

}  // namespace sinkserve::cuda
