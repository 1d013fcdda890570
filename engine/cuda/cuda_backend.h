// CudaBackend: the GPT-NeoX forward on an NVIDIA GPU, behind the same Backend interface as the
// CPU engine (docs/architecture.md) and checked against it op by op (tests/gpu).
//
// Weights live on the device as fp16 (dense checkpoints, any stored width), int8 or NF4 (the
// quantized matrices of ModelWeights, uploaded as they are). Matrix products of up to
// kGemvMaxTokens rows run in our own dequantize-in-registers kernels, larger ones in cuBLASLt
// (tensor cores, fp32 accumulation). Each session's KV cache is fp16 on the device, in blocks
// from the backend's pool. This header includes no CUDA header: it is what the rest of the
// engine sees, with or without a CUDA build.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/format/config.h"
#include "engine/format/weights.h"

namespace sinkserve {

struct CudaOptions {
  int device = 0;
  // Measure attention time with CUDA events on every Nth step (0 = never); the other steps
  // report the last measured value.
  int attention_timing_every = 1;
  // Replay the kernels of a step from a CUDA graph once its shape (rows, logit rows, attention
  // blocks, timed or not) has been seen twice: one launch instead of ~11 per layer. A capture
  // that fails turns graphs off for this backend (logged) and the step runs kernel by kernel.
  bool graphs = true;
  // Keep the input embedding table (untied) in pinned host memory that the embedding kernel
  // reads over PCIe — one row per token, 5 KB for Pythia-2.8B — instead of device memory
  // (257 MB for Pythia-2.8B), as llama.cpp keeps token embeddings on the host.
  bool embeddings_on_host = true;
  // Launch the small-batch matrix kernels with programmatic dependent launch (Hopper, sm_90+;
  // ignored by older GPUs): their blocks start while the kernel before them (a LayerNorm, the
  // attention, another product) finishes and stream their weights into L2 meanwhile. Ignored
  // where the GPU or the build lacks it. Off until a GPU run has measured it
  // (cuda_decode_bench has the rows to compare).
  bool programmatic_launch = false;
};

// OK when this build has CUDA and a device can be used; otherwise why not, in words a user
// can act on ("built without CUDA", "no CUDA device: ...").
absl::Status CudaAvailable();

// Uploads `weights` (which may be freed afterwards) and prepares the kernels.
absl::StatusOr<std::unique_ptr<Backend>> NewCudaBackend(const ModelConfig& config,
                                                        const ModelWeights& weights,
                                                        const CudaOptions& options);

// How many steps of a backend made by NewCudaBackend were replayed from CUDA graphs (0 for any
// other backend): tests and the benchmark check that graphs really ran.
int64_t CudaGraphLaunches(const Backend& backend);

}  // namespace sinkserve
