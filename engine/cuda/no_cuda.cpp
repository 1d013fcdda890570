// The CUDA entry points of a build without CUDA (SINKSERVE_WITH_CUDA=OFF or no nvcc).
#include "engine/cuda/cuda_backend.h"

namespace sinkserve {

absl::Status CudaAvailable() {
  return absl::UnavailableError(
      "this sinkserve was built without CUDA (no nvcc found, or SINKSERVE_WITH_CUDA=OFF); "
      "rebuild with the CUDA toolkit installed, or use --backend cpu");
}

absl::StatusOr<std::unique_ptr<Backend>> NewCudaBackend(const ModelConfig&, const ModelWeights&,
                                                        const CudaOptions&) {
  return CudaAvailable();
}

int64_t CudaGraphLaunches(const Backend&) { return 0; }

}  // namespace sinkserve
