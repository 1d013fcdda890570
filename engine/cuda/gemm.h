// Matrix products y = x·Wᵀ + bias on the device: our fused kernels for up to kGemvMaxTokens
// rows (batch-1 and small-batch decode read each weight once, dequantizing in registers),
// cuBLASLt on tensor cores (fp16 operands, fp32 accumulation and output, bias in the epilogue)
// for more rows — prefill and large decode batches. Quantized weights take the cuBLASLt path
// through fp16 copies of slices of rows in a scratch buffer (a slice is dequantized, then
// multiplied, then the next slice overwrites it: the scratch stays small next to the weights).
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

  // The fp16 scratch of quantized products: at most kScratchElements, at least 64 rows of the
  // widest quantized matrix, at most its whole size. 0 = no quantized matrices.
  static constexpr size_t kScratchElements = size_t{8} << 20;  // 16 MB
  static size_t ScratchElements(size_t largest_quantized_elements, int64_t widest_quantized_cols);
  absl::Status Init(DeviceAllocator& allocator, size_t scratch_elements);

  // y: [n_tokens][w.rows] fp32; x: [n_tokens][w.cols] fp16; bias [w.rows] or null. A
  // non-store epilogue is fused into the small-batch kernels; after cuBLASLt, y holds the
  // product and the epilogue runs as its own kernel.
  // `programmatic`: the small-batch kernel uses programmatic dependent launch (LaunchGemv);
  // only right after another kernel of the stream (not after a copy or an event record).
  absl::Status Run(const DeviceMatrixView& w, const float* bias, const Half* x, int n_tokens,
                   float* y, cudaStream_t stream, const GemvEpilogue& epilogue = {},
                   bool programmatic = false);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // Y[t][0..rows) at y with a row stride of ldy elements.
  absl::Status RunLt(const Half* w, int64_t rows, int64_t cols, const float* bias, const Half* x,
                     int n_tokens, float* y, int64_t ldy, cudaStream_t stream);
  absl::StatusOr<Plan*> GetPlan(int64_t rows, int64_t cols, int n_tokens, bool bias, int64_t ldy);

  // The product through cuBLASLt into y (quantized weights a slice at a time).
  absl::Status RunLarge(const DeviceMatrixView& w, const float* bias, const Half* x, int n_tokens,
                        float* y, cudaStream_t stream);
  absl::Status LtStatus(cublasStatus_t status, const char* what) const;

  const CublasLt* lt_ = nullptr;
  cublasLtHandle_t handle_ = nullptr;
  DeviceArray<std::byte> workspace_;
  DeviceArray<Half> dequantized_;
  std::map<std::tuple<int64_t, int64_t, int, bool, int64_t>, Plan> plans_;
};

}  // namespace sinkserve::cuda
