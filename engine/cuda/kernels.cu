// The CUDA kernels of the GPT-NeoX forward (see kernels.h for the contract of each).
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>

#include "engine/cuda/kernels.h"

namespace sinkserve::cuda {
namespace {

__constant__ float kNf4Lut[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

__device__ __forceinline__ float WarpSum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ __forceinline__ float WarpMax(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
__device__ float BlockSum(float value, float* scratch /* [32] */) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  value = WarpSum(value);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < blockDim.x / 32 ? scratch[lane] : 0.0f;
  return WarpSum(value);
}

__device__ float BlockMax(float value, float* scratch /* [32] */) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  value = WarpMax(value);
  __syncthreads();
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < blockDim.x / 32 ? scratch[lane] : -FLT_MAX;
  return WarpMax(value);
}

// Programmatic dependent launch (sm_90+; no-ops on older GPUs and for kernels launched without
// it). A kernel that lets its dependents launch lets the next kernel of the stream, when that
// one was launched programmatically, place its blocks once all of this kernel's blocks have
// started; the dependent must wait for its prerequisites before it touches anything they
// write or read (griddepcontrol.wait: they have completed and their writes are visible).
__device__ __forceinline__ void LetDependentsLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ void WaitForPrerequisites() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Asks for `bytes` bytes at `data` in L2, spread over a warp's lanes (128-byte lines).
__device__ __forceinline__ void PrefetchToL2(const void* data, int64_t bytes, int lane) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const char* line = static_cast<const char*>(data);
  for (int64_t offset = static_cast<int64_t>(lane) * 128; offset < bytes; offset += 32 * 128) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(line + offset));
  }
#endif
}

// 8 fp16 values of one 16-byte load, accumulated as fp32 dot products with 8 weights.
__device__ __forceinline__ void Unpack8(const uint4& bits, float* out) {
  const __half2* h = reinterpret_cast<const __half2*>(&bits);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// Four int8 (a 32-bit word, lowest byte first) as exact floats without I2F, a quarter-rate
// conversion on sm_80–90: q + 128 goes into the low mantissa bits of 2²³ (one byte permute),
// and 2²³ + 128 comes off (one add).
__device__ __forceinline__ void Int8x4ToFloat(uint32_t word, float* out) {
  const uint32_t biased = word ^ 0x80808080u;  // each byte q + 128, unsigned
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    out[j] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7440 + j)) - 8388736.0f;
  }
}

__device__ __forceinline__ float Dot8(const float* w, const uint4& x_bits) {
  float x[8];
  Unpack8(x_bits, x);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) sum = fmaf(w[i], x[i], sum);
  return sum;
}

__device__ __forceinline__ float Nf4Absmax(const DeviceMatrixView& w, int64_t block) {
  if (w.absmax != nullptr) return w.absmax[block];
  return w.dynamic_map[w.absmax_codes[block]] * w.absmax_block_scale[block / 256] +
         w.absmax_offset;
}

__device__ __forceinline__ float Gelu(float v, bool tanh_approximation) {
  if (tanh_approximation) {
    return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  }
  return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
}

// The end of a layer (HF's summation order): parallel x = (mlp + attn) + x, sequential
// x = mlp + attn (attn then already holds attn + x).
__device__ __forceinline__ float Residual(float x, float mlp, float attn, bool parallel) {
  return parallel ? (mlp + attn) + x : mlp + attn;
}

// One warp per output row; lane l reads 16-byte weight vectors l, l+32, ... of the row.
// Weights per vector: 8 (fp16), 16 (int8), 32 (NF4).
template <DeviceMatrixView::Format kFormat, int kMaxTokens>
__global__ void __launch_bounds__(256) GemvKernel(DeviceMatrixView w, const float* bias,
                                                  const __half* x, int n_tokens, float* y,
                                                  GemvEpilogue epilogue, bool programmatic) {
  LetDependentsLaunch();
  __shared__ float lut[16];
  if (kFormat == DeviceMatrixView::Format::kNf4 && threadIdx.x < 16) lut[threadIdx.x] = kNf4Lut[threadIdx.x];
  if (kFormat == DeviceMatrixView::Format::kNf4) __syncthreads();
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= w.rows) return;
  constexpr int kPerVector = kFormat == DeviceMatrixView::Format::kF16    ? 8
                             : kFormat == DeviceMatrixView::Format::kInt8 ? 16
                                                                          : 32;
  const int64_t cols = w.cols;
  const int64_t vectors = cols / kPerVector;
  const uint4* row_data = reinterpret_cast<const uint4*>(w.data) + row * vectors;
  if (programmatic) {
    // Launched before the previous kernel has finished: stream this row's weights (which no
    // kernel writes) into L2 meanwhile, then wait for the inputs.
    PrefetchToL2(row_data, vectors * 16, lane);
    WaitForPrerequisites();
  }
  float acc[kMaxTokens];
#pragma unroll
  for (int t = 0; t < kMaxTokens; ++t) acc[t] = 0.0f;

#pragma unroll 2
  for (int64_t v = lane; v < vectors; v += 32) {
    const uint4 bits = __ldg(row_data + v);
    float wf[kPerVector];
    // NF4: the vector's scale multiplies its partial sums (one multiply per token instead of
    // one per weight); int8: the row's scale multiplies the final sums.
    float scale = 1.0f;
    if constexpr (kFormat == DeviceMatrixView::Format::kF16) {
      Unpack8(bits, wf);
    } else if constexpr (kFormat == DeviceMatrixView::Format::kInt8) {
      const uint32_t* words = reinterpret_cast<const uint32_t*>(&bits);
#pragma unroll
      for (int i = 0; i < 4; ++i) Int8x4ToFloat(words[i], wf + 4 * i);
    } else {
      const uint8_t* q = reinterpret_cast<const uint8_t*>(&bits);
      // 32 elements = half of a 64-block: one absmax for the whole vector.
      scale = Nf4Absmax(w, (row * cols + v * 32) / 64);
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        wf[2 * i] = lut[q[i] >> 4];
        wf[2 * i + 1] = lut[q[i] & 15];
      }
    }
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (t < n_tokens) {
        const uint4* xv = reinterpret_cast<const uint4*>(x + t * cols + v * kPerVector);
        float partial = 0.0f;
#pragma unroll
        // Plain loads: x may be written by the kernel before this one, which a programmatic
        // launch overlaps (__ldg's non-coherent path assumes data fixed for the whole kernel).
        for (int j = 0; j < kPerVector / 8; ++j) partial += Dot8(wf + 8 * j, xv[j]);
        if constexpr (kFormat == DeviceMatrixView::Format::kNf4) {
          acc[t] = fmaf(partial, scale, acc[t]);
        } else {
          acc[t] += partial;
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxTokens; ++t) {
    if (t < n_tokens) {
      float sum = WarpSum(acc[t]);
      if (lane == 0) {
        if constexpr (kFormat == DeviceMatrixView::Format::kInt8) {
          sum *= w.absmax[row] * (1.0f / 127.0f);
        }
        const float v = sum + (bias != nullptr ? bias[row] : 0.0f);
        const int64_t i = t * w.rows + row;
        switch (epilogue.kind) {
          case GemvEpilogue::Kind::kStore:
            y[i] = v;
            break;
          case GemvEpilogue::Kind::kGelu:
            reinterpret_cast<__half*>(epilogue.gelu_out)[i] =
                __float2half_rn(Gelu(v, epilogue.tanh_approximation));
            break;
          case GemvEpilogue::Kind::kResidual:
            epilogue.x[i] = Residual(epilogue.x[i], v, epilogue.attn[i], epilogue.parallel);
            break;
        }
      }
    }
  }
}

template <DeviceMatrixView::Format kFormat>
void LaunchGemvFormat(const DeviceMatrixView& w, const float* bias, const __half* x, int n,
                      float* y, const GemvEpilogue& epilogue, bool programmatic,
                      cudaStream_t stream) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>((w.rows + 7) / 8));
  config.blockDim = dim3(256);
  config.stream = stream;
  config.attrs = programmatic ? &attribute : nullptr;
  config.numAttrs = programmatic ? 1 : 0;
  auto launch = [&](auto kernel) {
    cudaLaunchKernelEx(&config, kernel, w, bias, x, n, y, epilogue, programmatic);
  };
  if (n == 1) {
    launch(GemvKernel<kFormat, 1>);
  } else if (n == 2) {
    launch(GemvKernel<kFormat, 2>);
  } else if (n <= 4) {
    launch(GemvKernel<kFormat, 4>);
  } else {
    launch(GemvKernel<kFormat, 8>);
  }
}

// Dequantization of one element, with the NF4 values in shared memory (`lut`).
__device__ __forceinline__ float DequantizeElement(const DeviceMatrixView& w, int64_t i,
                                                   const float* lut) {
  switch (w.format) {
    case DeviceMatrixView::Format::kF16:
      return __half2float(static_cast<const __half*>(w.data)[i]);
    case DeviceMatrixView::Format::kInt8:
      return static_cast<float>(static_cast<const int8_t*>(w.data)[i]) * w.absmax[i / w.cols] *
             (1.0f / 127.0f);
    case DeviceMatrixView::Format::kNf4: {
      const uint8_t byte = static_cast<const uint8_t*>(w.data)[i / 2];
      return lut[(i % 2 == 0) ? byte >> 4 : byte & 15] * Nf4Absmax(w, i / 64);
    }
  }
  return 0.0f;
}

// One thread per 16-byte vector of codes (16 int8 or 32 NF4 weights) of rows
// [row_begin, row_begin + n_rows), written as fp16 with 16-byte stores from out[0]: a pass at
// memory speed before the cuBLASLt product of a large batch.
template <DeviceMatrixView::Format kFormat>
__global__ void DequantizeKernel(DeviceMatrixView w, int64_t row_begin, int64_t n_rows,
                                 __half* out) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kNf4Lut[threadIdx.x];
  __syncthreads();
  constexpr int kPerVector = kFormat == DeviceMatrixView::Format::kInt8 ? 16 : 32;
  const int64_t vectors_per_row = w.cols / kPerVector;
  const int64_t first = row_begin * vectors_per_row;
  const int64_t vectors = n_rows * vectors_per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t v = first + i;  // in the whole matrix
    const uint4 bits = __ldg(reinterpret_cast<const uint4*>(w.data) + v);
    __align__(16) __half values[kPerVector];
    if constexpr (kFormat == DeviceMatrixView::Format::kInt8) {
      const uint32_t* words = reinterpret_cast<const uint32_t*>(&bits);
      const float scale = w.absmax[v / vectors_per_row] * (1.0f / 127.0f);
      float q[16];
#pragma unroll
      for (int e = 0; e < 4; ++e) Int8x4ToFloat(words[e], q + 4 * e);
#pragma unroll
      for (int e = 0; e < 16; ++e) values[e] = __float2half_rn(q[e] * scale);
    } else {
      const uint8_t* q = reinterpret_cast<const uint8_t*>(&bits);
      const float scale = Nf4Absmax(w, v / 2);  // 32 elements = half a 64-block
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        values[2 * e] = __float2half_rn(lut[q[e] >> 4] * scale);
        values[2 * e + 1] = __float2half_rn(lut[q[e] & 15] * scale);
      }
    }
    uint4* destination = reinterpret_cast<uint4*>(out + i * kPerVector);
#pragma unroll
    for (int j = 0; j < kPerVector / 8; ++j) destination[j] = reinterpret_cast<const uint4*>(values)[j];
  }
}

__global__ void EmbeddingKernel(DeviceMatrixView table, const int32_t* tokens, float* out) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kNf4Lut[threadIdx.x];
  __syncthreads();
  const int t = blockIdx.x;
  const int64_t base = static_cast<int64_t>(tokens[t]) * table.cols;
  float* row = out + static_cast<int64_t>(t) * table.cols;
  if (table.format == DeviceMatrixView::Format::kF16 && table.cols % 8 == 0) {
    // 16-byte loads: few, wide reads, which matters when the table is host memory read over
    // PCIe (CudaOptions::embeddings_on_host).
    const uint4* source = reinterpret_cast<const uint4*>(static_cast<const __half*>(table.data) + base);
    for (int64_t v = threadIdx.x; v < table.cols / 8; v += blockDim.x) {
      const uint4 bits = source[v];
      const __half2* pairs = reinterpret_cast<const __half2*>(&bits);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 values = __half22float2(pairs[j]);
        row[8 * v + 2 * j] = values.x;
        row[8 * v + 2 * j + 1] = values.y;
      }
    }
    return;
  }
  for (int64_t k = threadIdx.x; k < table.cols; k += blockDim.x) {
    row[k] = DequantizeElement(table, base + k, lut);
  }
}

// One block per row; two passes over the row (mean, then variance of x − mean) in fp32; each
// of the `n_outputs` outputs with its own weight and bias.
__global__ void LayerNormKernel(const float* x, int dim, float eps, LayerNormOutput first,
                                LayerNormOutput second, int n_outputs) {
  LetDependentsLaunch();
  __shared__ float scratch[32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * dim;
  float sum = 0.0f;
  for (int k = threadIdx.x; k < dim; k += blockDim.x) sum += row[k];
  const float mean = BlockSum(sum, scratch) / dim;
  float squares = 0.0f;
  for (int k = threadIdx.x; k < dim; k += blockDim.x) {
    const float centered = row[k] - mean;
    squares += centered * centered;
  }
  const float inv_std = rsqrtf(BlockSum(squares, scratch) / dim + eps);
  // Each output by name (choosing one by a run-time index would put the parameters in local
  // memory).
  auto normalize = [&](const LayerNormOutput& output) {
    __half* out_row = reinterpret_cast<__half*>(output.out) + static_cast<int64_t>(blockIdx.x) * dim;
    for (int k = threadIdx.x; k < dim; k += blockDim.x) {
      out_row[k] = __float2half_rn((row[k] - mean) * inv_std * output.weight[k] + output.bias[k]);
    }
  };
  normalize(first);
  if (n_outputs == 2) normalize(second);
}

__global__ void AddInPlaceKernel(float* a, const float* x, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    a[i] += x[i];
  }
}

__global__ void ResidualKernel(float* x, const float* mlp, const float* attn, int64_t n,
                               bool parallel) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = Residual(x[i], mlp[i], attn[i], parallel);
  }
}

__global__ void GeluKernel(const float* in, int64_t n, bool tanh_approximation, __half* out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2half_rn(Gelu(in[i], tanh_approximation));
  }
}

// cos/sin row of `position` in the rotary table: [cos rot][sin rot].
__device__ __forceinline__ const float* RotaryRow(const float* rotary, int rot, int position) {
  return rotary + static_cast<int64_t>(position) * 2 * rot;
}

// Grid (rows, heads); one thread per head dimension.
__global__ void StoreKvKernel(const AttentionRow* rows, AttentionShape shape, const float* qkv,
                              const float* rotary) {
  const AttentionRow& r = rows[blockIdx.x];
  const int head = blockIdx.y, d = shape.head_dim, rot = shape.rotary_ndims, half = rot / 2;
  const float* q_k_v = qkv + (static_cast<int64_t>(blockIdx.x) * shape.num_heads + head) * 3 * d;
  const float* key = q_k_v + d;
  const float* value = q_k_v + 2 * d;
  const int64_t head_block = static_cast<int64_t>(r.capacity) * d;
  __half* keys = reinterpret_cast<__half*>(r.kv) +
                 ((static_cast<int64_t>(shape.layer) * 2 + 0) * shape.num_heads + head) * head_block;
  __half* values = reinterpret_cast<__half*>(r.kv) +
                   ((static_cast<int64_t>(shape.layer) * 2 + 1) * shape.num_heads + head) * head_block;
  for (int k = threadIdx.x; k < d; k += blockDim.x) {
    float out = key[k];
    if (r.new_key_position >= 0 && k < rot) {
      const float* cos = RotaryRow(rotary, rot, r.new_key_position);
      const float* sin = cos + rot;
      out = k < half ? key[k] * cos[k] - key[k + half] * sin[k]
                     : key[k] * cos[k] + key[k - half] * sin[k];
    }
    keys[static_cast<int64_t>(r.new_slot) * d + k] = __float2half_rn(out);
    values[static_cast<int64_t>(r.new_slot) * d + k] = __float2half_rn(value[k]);
  }
}

// Keys of one block share a dot product over kKeyLanes lanes (16-byte loads: a head_dim-80 key
// is 10 loads, read by 8 neighbouring lanes as one 160-byte run), 16 keys per pass of the block.
constexpr int kAttentionThreads = 128;
constexpr int kKeyLanes = 8;
static_assert(kAttentionKeysPerBlock <= kAttentionThreads, "one thread per key in the softmax");

// Grid (rows·heads, max_blocks); kAttentionThreads threads. Block y reduces keys
// [64·y, 64·y + 64) of its (row, head) to (max, sum, Σ p·v) in partials; the last block of a
// (row, head) to finish combines them into out (arrivals counts the finished blocks and is
// reset for the next launch). A (row, head) with a single block writes out directly.
__global__ void __launch_bounds__(kAttentionThreads)
    AttentionKernel(const AttentionRow* rows, AttentionShape shape, const float* qkv,
                    const float* rotary, float* partials, int max_blocks, int* arrivals,
                    __half* out) {
  LetDependentsLaunch();
  extern __shared__ float shared[];
  __shared__ bool combines;
  const int d = shape.head_dim, rot = shape.rotary_ndims, half = rot / 2;
  const int row_index = blockIdx.x / shape.num_heads, head = blockIdx.x % shape.num_heads;
  const AttentionRow& r = rows[row_index];
  const int key_begin = blockIdx.y * kAttentionKeysPerBlock;
  if (key_begin >= r.total_keys) return;
  const int n_keys = min(kAttentionKeysPerBlock, r.total_keys - key_begin);
  const int blocks = (r.total_keys + kAttentionKeysPerBlock - 1) / kAttentionKeysPerBlock;
  const int chunks = d / 8;                       // 16-byte vectors per key / value
  const int groups = kAttentionThreads / chunks;  // of the Σ p·v pass

  float* queries = shared;                                    // [spans][d], rotated per span
  float* probs = queries + kAttentionMaxSpans * d;            // [keys per block]
  int* slots = reinterpret_cast<int*>(probs + kAttentionKeysPerBlock);  // [keys per block]
  float* sums = reinterpret_cast<float*>(slots + kAttentionKeysPerBlock);  // [groups][d]
  float* scratch = sums + groups * d;                         // [32]

  const float* q = qkv + (static_cast<int64_t>(row_index) * shape.num_heads + head) * 3 * d;
  for (int i = threadIdx.x; i < r.num_spans * d; i += blockDim.x) {
    const int s = i / d, k = i % d;
    float value = q[k];
    if (k < rot) {
      const float* cos = RotaryRow(rotary, rot, r.spans[s].query_position);
      const float* sin = cos + rot;
      value = k < half ? q[k] * cos[k] - q[k + half] * sin[k] : q[k] * cos[k] + q[k - half] * sin[k];
    }
    queries[s * d + k] = value;
  }
  __syncthreads();

  const int64_t head_block = static_cast<int64_t>(r.capacity) * d;
  const __half* keys = reinterpret_cast<const __half*>(r.kv) +
                       ((static_cast<int64_t>(shape.layer) * 2 + 0) * shape.num_heads + head) * head_block;
  const __half* values = reinterpret_cast<const __half*>(r.kv) +
                         ((static_cast<int64_t>(shape.layer) * 2 + 1) * shape.num_heads + head) * head_block;
  const float scale = rsqrtf(static_cast<float>(d));

  // Scores: key jj of the block on lanes [kKeyLanes·(jj % 16), +kKeyLanes).
  const int key_lane = threadIdx.x % kKeyLanes;
  for (int first = 0; first < n_keys; first += kAttentionThreads / kKeyLanes) {
    const int jj = first + threadIdx.x / kKeyLanes;
    float dot = 0.0f;
    if (jj < n_keys) {
      // Which span the key falls in, and its offset there.
      int j = key_begin + jj, s = 0;
      while (j >= r.spans[s].num_slots) j -= r.spans[s++].num_slots;
      const AttentionSpan& span = r.spans[s];
      const int slot = span.begin_slot + j;
      if (key_lane == 0) slots[jj] = slot;
      const uint4* key = reinterpret_cast<const uint4*>(keys + static_cast<int64_t>(slot) * d);
      const float* query = queries + s * d;
      // A key stored un-rotated is rotated at its rank through the query instead:
      // q·R(θ)k = q'·k with q'[i] = q[i]·cos + q[i+h]·sin, q'[i+h] = q[i+h]·cos − q[i]·sin.
      const bool rotate = span.key_rank_begin >= 0;
      const float* cos = RotaryRow(rotary, rot, rotate ? span.key_rank_begin + j : 0);
      const float* sin = cos + rot;
      for (int c = key_lane; c < chunks; c += kKeyLanes) {
        float k8[8];
        Unpack8(__ldg(key + c), k8);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int k = 8 * c + e;
          float qk = query[k];
          if (rotate && k < rot) {
            qk = k < half ? query[k] * cos[k] + query[k + half] * sin[k]
                          : query[k] * cos[k] - query[k - half] * sin[k];
          }
          dot = fmaf(qk, k8[e], dot);
        }
      }
    }
#pragma unroll
    for (int offset = kKeyLanes / 2; offset > 0; offset /= 2) {
      dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    }
    if (key_lane == 0 && jj < n_keys) probs[jj] = dot * scale;
  }
  __syncthreads();

  const float score = threadIdx.x < n_keys ? probs[threadIdx.x] : -FLT_MAX;
  const float max_score = BlockMax(score, scratch);
  const float p = threadIdx.x < n_keys ? __expf(score - max_score) : 0.0f;
  if (threadIdx.x < kAttentionKeysPerBlock) probs[threadIdx.x] = p;
  const float sum = BlockSum(p, scratch);  // its barriers also publish probs

  // Σ p·v: thread (g, c) adds vector c of the values of keys g, g + groups, ...
  const int g = threadIdx.x / chunks, c = threadIdx.x % chunks;
  if (g < groups) {
    float acc[8] = {};
    for (int j = g; j < n_keys; j += groups) {
      float v8[8];
      Unpack8(__ldg(reinterpret_cast<const uint4*>(values + static_cast<int64_t>(slots[j]) * d) + c),
              v8);
      const float pj = probs[j];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fmaf(pj, v8[e], acc[e]);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sums[g * d + 8 * c + e] = acc[e];
  }
  __syncthreads();
  __half* out_row = out + (static_cast<int64_t>(row_index) * shape.num_heads + head) * d;
  if (blocks == 1) {
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
      float total = 0.0f;
      for (int gg = 0; gg < groups; ++gg) total += sums[gg * d + k];
      out_row[k] = __float2half_rn(total / sum);
    }
    return;
  }
  float* partial = partials + ((static_cast<int64_t>(blockIdx.x) * max_blocks) + blockIdx.y) * (d + 2);
  for (int k = threadIdx.x; k < d; k += blockDim.x) {
    float total = 0.0f;
    for (int gg = 0; gg < groups; ++gg) total += sums[gg * d + k];
    partial[2 + k] = total;
  }
  if (threadIdx.x == 0) {
    partial[0] = max_score;
    partial[1] = sum;
  }

  // The last block of the (row, head) to finish combines (the threadFenceReduction pattern).
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) combines = atomicAdd(&arrivals[blockIdx.x], 1) == blocks - 1;
  __syncthreads();
  if (!combines) return;
  __threadfence();
  if (threadIdx.x == 0) arrivals[blockIdx.x] = 0;  // for the next launch
  const float* first_partial = partials + static_cast<int64_t>(blockIdx.x) * max_blocks * (d + 2);
  float total_max = -FLT_MAX;
  for (int b = 0; b < blocks; ++b) total_max = fmaxf(total_max, __ldcg(first_partial + b * (d + 2)));
  float denominator = 0.0f;
  for (int b = 0; b < blocks; ++b) {
    const float* block = first_partial + b * (d + 2);
    denominator += __ldcg(block + 1) * __expf(__ldcg(block) - total_max);
  }
  for (int k = threadIdx.x; k < d; k += blockDim.x) {
    float numerator = 0.0f;
    for (int b = 0; b < blocks; ++b) {
      const float* block = first_partial + b * (d + 2);
      numerator += __ldcg(block + 2 + k) * __expf(__ldcg(block) - total_max);
    }
    out_row[k] = __float2half_rn(numerator / denominator);
  }
}

unsigned ElementwiseBlocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096));
}

// (value, index) pairs: the larger value wins, the lower index among equals.
__device__ __forceinline__ void ArgmaxMerge(float& value, int& index, float other_value,
                                            int other_index) {
  if (other_value > value || (other_value == value && other_index < index)) {
    value = other_value;
    index = other_index;
  }
}

__global__ void __launch_bounds__(1024) ArgmaxKernel(const float* logits, int vocab,
                                                     int32_t* next) {
  __shared__ float values[32];
  __shared__ int indices[32];
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float value = -INFINITY;
  int index = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) ArgmaxMerge(value, index, row[i], i);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
    const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
    ArgmaxMerge(value, index, other_value, other_index);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    values[warp] = value;
    indices[warp] = index;
  }
  __syncthreads();
  if (warp == 0) {
    value = lane < blockDim.x / 32 ? values[lane] : -INFINITY;
    index = lane < blockDim.x / 32 ? indices[lane] : INT_MAX;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
      const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
      ArgmaxMerge(value, index, other_value, other_index);
    }
    // A row of only NaN keeps index INT_MAX (NaN never wins a comparison): 0, as
    // std::max_element gives. (Unlike it, a NaN at index 0 of a row with numbers loses.)
    if (lane == 0) next[blockIdx.x] = index == INT_MAX ? 0 : index;
  }
}

}  // namespace

void LaunchGemv(const DeviceMatrixView& w, const float* bias, const Half* x, int n_tokens,
                float* y, const GemvEpilogue& epilogue, bool programmatic, cudaStream_t stream) {
  const __half* xh = reinterpret_cast<const __half*>(x);
  switch (w.format) {
    case DeviceMatrixView::Format::kF16:
      return LaunchGemvFormat<DeviceMatrixView::Format::kF16>(w, bias, xh, n_tokens, y, epilogue,
                                                              programmatic, stream);
    case DeviceMatrixView::Format::kInt8:
      return LaunchGemvFormat<DeviceMatrixView::Format::kInt8>(w, bias, xh, n_tokens, y,
                                                               epilogue, programmatic, stream);
    case DeviceMatrixView::Format::kNf4:
      return LaunchGemvFormat<DeviceMatrixView::Format::kNf4>(w, bias, xh, n_tokens, y, epilogue,
                                                              programmatic, stream);
  }
}

bool ProgrammaticLaunchAvailable() {
  int device = 0, major = 0;
  cudaFuncAttributes attributes{};
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaFuncGetAttributes(&attributes, GemvKernel<DeviceMatrixView::Format::kF16, 1>) !=
          cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  // Code from PTX older than compute_90 (a JIT-compiled build for older GPUs only) has no
  // griddepcontrol.wait: launched programmatically, it would race.
  return major >= 9 && attributes.ptxVersion >= 90;
}

void LaunchDequantize(const DeviceMatrixView& w, int64_t row_begin, int64_t n_rows, Half* out,
                      cudaStream_t stream) {
  __half* destination = reinterpret_cast<__half*>(out);
  if (w.format == DeviceMatrixView::Format::kInt8) {
    DequantizeKernel<DeviceMatrixView::Format::kInt8>
        <<<ElementwiseBlocks(n_rows * w.cols / 16), 256, 0, stream>>>(w, row_begin, n_rows,
                                                                       destination);
  } else if (w.format == DeviceMatrixView::Format::kNf4) {
    DequantizeKernel<DeviceMatrixView::Format::kNf4>
        <<<ElementwiseBlocks(n_rows * w.cols / 32), 256, 0, stream>>>(w, row_begin, n_rows,
                                                                       destination);
  }
}

void LaunchEmbedding(const DeviceMatrixView& table, const int32_t* tokens, int n_tokens,
                     float* out, cudaStream_t stream) {
  EmbeddingKernel<<<n_tokens, 256, 0, stream>>>(table, tokens, out);
}

void LaunchLayerNorm(const float* x, int n_rows, int dim, float eps,
                     const LayerNormOutput& first, cudaStream_t stream) {
  LayerNormKernel<<<n_rows, 256, 0, stream>>>(x, dim, eps, first, first, 1);
}

void LaunchLayerNorms(const float* x, int n_rows, int dim, float eps,
                      const LayerNormOutput& first, const LayerNormOutput& second,
                      cudaStream_t stream) {
  LayerNormKernel<<<n_rows, 256, 0, stream>>>(x, dim, eps, first, second, 2);
}

void LaunchAddInPlace(float* a, const float* x, int64_t n, cudaStream_t stream) {
  AddInPlaceKernel<<<ElementwiseBlocks(n), 256, 0, stream>>>(a, x, n);
}

void LaunchResidual(float* x, const float* mlp, const float* attn, int64_t n, bool parallel,
                    cudaStream_t stream) {
  ResidualKernel<<<ElementwiseBlocks(n), 256, 0, stream>>>(x, mlp, attn, n, parallel);
}

void LaunchGelu(const float* in, int64_t n, bool tanh_approximation, Half* out,
                cudaStream_t stream) {
  GeluKernel<<<ElementwiseBlocks(n), 256, 0, stream>>>(in, n, tanh_approximation,
                                                        reinterpret_cast<__half*>(out));
}

void LaunchStoreKv(const AttentionRow* rows, int n_rows, const AttentionShape& shape,
                   const float* qkv, const float* rotary, cudaStream_t stream) {
  const dim3 grid(n_rows, shape.num_heads);
  StoreKvKernel<<<grid, 128, 0, stream>>>(rows, shape, qkv, rotary);
}

void LaunchAttention(const AttentionRow* rows, int n_rows, int max_blocks,
                     const AttentionShape& shape, const float* qkv, const float* rotary,
                     float* partials, int* arrivals, Half* out, cudaStream_t stream) {
  const dim3 grid(n_rows * shape.num_heads, max_blocks);
  const int groups = kAttentionThreads / (shape.head_dim / 8);
  const size_t shared_bytes = (kAttentionMaxSpans * shape.head_dim + 2 * kAttentionKeysPerBlock +
                               groups * shape.head_dim + 32) *
                              sizeof(float);
  AttentionKernel<<<grid, kAttentionThreads, shared_bytes, stream>>>(
      rows, shape, qkv, rotary, partials, max_blocks, arrivals, reinterpret_cast<__half*>(out));
}

void LaunchArgmax(const float* logits, int n_rows, int vocab, int32_t* next, cudaStream_t stream) {
  ArgmaxKernel<<<n_rows, 1024, 0, stream>>>(logits, vocab, next);
}

}  // namespace sinkserve::cuda
