#include "engine/cuda/gemm.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sinkserve::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32 << 20;
// Slices of a quantized product start on multiples of 64 rows: 256-byte aligned output and
// bias pointers, as cuBLASLt's fastest kernels want.
constexpr int64_t kSliceRowAlignment = 64;

}  // namespace

absl::Status Gemm::LtStatus(cublasStatus_t status, const char* what) const {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, " failed: ",
                                          lt_->GetStatusString(status)));
}

#define LT_RETURN_IF_ERROR(expr)                                               \
  do {                                                                         \
    if (absl::Status lt_status = LtStatus((expr), #expr); !lt_status.ok()) { \
      return lt_status;                                                        \
    }                                                                          \
  } while (0)

Gemm::~Gemm() {
  if (lt_ == nullptr) return;
  for (auto& [key, plan] : plans_) {
    lt_->MatrixLayoutDestroy(plan.a);
    lt_->MatrixLayoutDestroy(plan.b);
    lt_->MatrixLayoutDestroy(plan.c);
    lt_->MatmulDescDestroy(plan.desc);
  }
  if (handle_ != nullptr) lt_->Destroy(handle_);
}

size_t Gemm::ScratchElements(size_t largest_quantized_elements, int64_t widest_quantized_cols) {
  const size_t floor = static_cast<size_t>(kSliceRowAlignment * widest_quantized_cols);
  return std::min(largest_quantized_elements, std::max(kScratchElements, floor));
}

absl::Status Gemm::Init(DeviceAllocator& allocator, size_t scratch_elements) {
  absl::StatusOr<const CublasLt*> lt = LoadCublasLt();
  if (!lt.ok()) return lt.status();
  lt_ = *lt;
  LT_RETURN_IF_ERROR(lt_->Create(&handle_));
  absl::StatusOr<DeviceArray<std::byte>> workspace =
      DeviceArray<std::byte>::Make(allocator, kWorkspaceBytes, "the cuBLASLt workspace");
  if (!workspace.ok()) return workspace.status();
  workspace_ = std::move(*workspace);
  if (scratch_elements > 0) {
    absl::StatusOr<DeviceArray<Half>> scratch = DeviceArray<Half>::Make(
        allocator, scratch_elements, "the fp16 scratch of quantized matrix products");
    if (!scratch.ok()) return scratch.status();
    dequantized_ = std::move(*scratch);
  }
  return absl::OkStatus();
}

absl::StatusOr<Gemm::Plan*> Gemm::GetPlan(int64_t rows, int64_t cols, int n_tokens, bool bias,
                                          int64_t ldy) {
  const auto key = std::make_tuple(rows, cols, n_tokens, bias, ldy);
  if (auto it = plans_.find(key); it != plans_.end()) return &it->second;
  Plan plan;
  // Column-major view: Yᵀ[rows × n] = W[rows × cols] · Xᵀ[cols × n], where the row-major
  // weight is a column-major [cols × rows] matrix used transposed.
  LT_RETURN_IF_ERROR(lt_->MatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  LT_RETURN_IF_ERROR(lt_->MatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                    &transpose, sizeof(transpose)));
  LT_RETURN_IF_ERROR(lt_->MatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                    &none, sizeof(none)));
  const cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  LT_RETURN_IF_ERROR(lt_->MatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                    &epilogue, sizeof(epilogue)));
  LT_RETURN_IF_ERROR(lt_->MatrixLayoutCreate(&plan.a, CUDA_R_16F, cols, rows, cols));
  LT_RETURN_IF_ERROR(lt_->MatrixLayoutCreate(&plan.b, CUDA_R_16F, cols, n_tokens, cols));
  LT_RETURN_IF_ERROR(lt_->MatrixLayoutCreate(&plan.c, CUDA_R_32F, rows, n_tokens, ldy));

  cublasLtMatmulPreference_t preference = nullptr;
  LT_RETURN_IF_ERROR(lt_->MatmulPreferenceCreate(&preference));
  const size_t workspace_bytes = kWorkspaceBytes;
  lt_->MatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes, sizeof(workspace_bytes));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = lt_->MatmulAlgoGetHeuristic(
      handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, preference, 1, &result, &found);
  lt_->MatmulPreferenceDestroy(preference);
  LT_RETURN_IF_ERROR(status);
  if (found == 0) {
    return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for a ", rows, "x", cols,
                                            " fp16 matrix times ", n_tokens, " rows"));
  }
  plan.algo = result.algo;
  return &(plans_[key] = plan);
}

absl::Status Gemm::RunLt(const Half* w, int64_t rows, int64_t cols, const float* bias,
                         const Half* x, int n_tokens, float* y, int64_t ldy,
                         cudaStream_t stream) {
  absl::StatusOr<Plan*> plan = GetPlan(rows, cols, n_tokens, bias != nullptr, ldy);
  if (!plan.ok()) return plan.status();
  if (bias != nullptr) {
    LT_RETURN_IF_ERROR(lt_->MatmulDescSetAttribute(
        (*plan)->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const float alpha = 1.0f, beta = 0.0f;
  LT_RETURN_IF_ERROR(lt_->Matmul(handle_, (*plan)->desc, &alpha, w, (*plan)->a, x,
                                    (*plan)->b, &beta, y, (*plan)->c, y, (*plan)->c,
                                    &(*plan)->algo, workspace_.get(), workspace_.bytes(), stream));
  return absl::OkStatus();
}

absl::Status Gemm::Run(const DeviceMatrixView& w, const float* bias, const Half* x, int n_tokens,
                       float* y, cudaStream_t stream, const GemvEpilogue& epilogue,
                       bool programmatic) {
  if (n_tokens <= kGemvMaxTokens) {
    LaunchGemv(w, bias, x, n_tokens, y, epilogue, programmatic, stream);
    return absl::OkStatus();
  }
  if (absl::Status s = RunLarge(w, bias, x, n_tokens, y, stream); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(n_tokens) * w.rows;
  switch (epilogue.kind) {
    case GemvEpilogue::Kind::kStore:
      break;
    case GemvEpilogue::Kind::kGelu:
      LaunchGelu(y, n, epilogue.tanh_approximation, epilogue.gelu_out, stream);
      break;
    case GemvEpilogue::Kind::kResidual:
      LaunchResidual(epilogue.x, y, epilogue.attn, n, epilogue.parallel, stream);
      break;
  }
  return absl::OkStatus();
}

absl::Status Gemm::RunLarge(const DeviceMatrixView& w, const float* bias, const Half* x,
                            int n_tokens, float* y, cudaStream_t stream) {
  if (w.format == DeviceMatrixView::Format::kF16) {
    return RunLt(static_cast<const Half*>(w.data), w.rows, w.cols, bias, x, n_tokens, y, w.rows,
                 stream);
  }
  // Slices of whole multiples of 64 rows that fit the scratch (or the whole matrix).
  int64_t slice = static_cast<int64_t>(dequantized_.size()) / w.cols;
  slice = slice >= w.rows ? w.rows : slice / kSliceRowAlignment * kSliceRowAlignment;
  if (slice == 0) {
    return absl::InternalError(absl::StrCat("the dequantization scratch (", dequantized_.size(),
                                            " elements) is smaller than 64 rows of a ", w.rows,
                                            "x", w.cols, " quantized matrix"));
  }
  for (int64_t begin = 0; begin < w.rows; begin += slice) {
    const int64_t rows = std::min(slice, w.rows - begin);
    // Stream order: this slice's dequantize waits for the previous slice's product.
    LaunchDequantize(w, begin, rows, dequantized_.get(), stream);
    if (absl::Status s = RunLt(dequantized_.get(), rows, w.cols,
                               bias != nullptr ? bias + begin : nullptr, x, n_tokens, y + begin,
                               w.rows, stream);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace sinkserve::cuda
