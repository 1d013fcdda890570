// Matrix products y = x·Wᵀ + bias on the device: our fused kernels for up to kGemvMaxTokens
// rows (batch-1 and small-batch decode read each weight once, dequantizing in registers),
// cuBLASLt on tensor cores (fp16 operands, fp32 accumulation and output, bias in the epilogue)
// for more rows — prefill and large decode batches. Quantized weights take the cuBLASLt path
// through a per-call fp16 copy of the matrix in a scratch buffer.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <tuple>

#include "absl/status/status.h"
#include "engine/cuda/cublaslt_library.h"
#include "engine/cuda/device_memory.h"
#include "engine/cuda/kernels.h"

namespace sinkserve::cuda {

class Gemm {
 public:
  Gemm() = default;
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  ~Gemm();

  // max_dequant_elements: the largest quantized matrix (sizes the fp16 scratch; 0 = none).
  absl::Status Init(DeviceAllocator& allocator, size_t max_dequant_elements);

  // y: [n_tokens][w.rows] fp32; x: [n_tokens][w.cols] fp16; bias [w.rows] or null.
  absl::Status Run(const DeviceMatrixView& w, const float* bias, const Half* x, int n_tokens,
                   float* y, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  absl::Status RunLt(const Half* w, int64_t rows, int64_t cols, const float* bias, const Half* x,
                     int n_tokens, float* y, cudaStream_t stream);
  absl::StatusOr<Plan*> GetPlan(int64_t rows, int64_t cols, int n_tokens, bool bias);

  absl::Status LtStatus(cublasStatus_t status, const char* what) const;

  const CublasLt* lt_ = nullptr;
  cublasLtHandle_t handle_ = nullptr;
  DeviceArray<std::byte> workspace_;
  DeviceArray<Half> dequantized_;
  std::map<std::tuple<int64_t, int64_t, int, bool>, Plan> plans_;
};

}  // namespace sinkserve::cuda
