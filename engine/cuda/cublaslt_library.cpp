#include "engine/cuda/cublaslt_library.h"

#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace sinkserve::cuda {
namespace {

constexpr char kLibrary[] = "libcublasLt.so.13";

absl::StatusOr<CublasLt> Load() {
  void* handle = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "cannot load ", kLibrary, " (", dlerror(), "): install the CUDA 13 runtime libraries "
        "(cuBLAS) or add their directory to LD_LIBRARY_PATH, or use --backend cpu"));
  }
  CublasLt lt{};
  absl::Status status;
  auto resolve = [&](auto& function, const char* name) {
    function = reinterpret_cast<std::remove_reference_t<decltype(function)>>(dlsym(handle, name));
    if (function == nullptr && status.ok()) {
      status = absl::UnavailableError(
          absl::StrCat(kLibrary, " has no ", name, ": it is not a CUDA 13 cuBLASLt"));
    }
  };
  resolve(lt.Create, "cublasLtCreate");
  resolve(lt.Destroy, "cublasLtDestroy");
  resolve(lt.GetStatusString, "cublasLtGetStatusString");
  resolve(lt.Matmul, "cublasLtMatmul");
  resolve(lt.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
  resolve(lt.MatmulDescCreate, "cublasLtMatmulDescCreate");
  resolve(lt.MatmulDescDestroy, "cublasLtMatmulDescDestroy");
  resolve(lt.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
  resolve(lt.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
  resolve(lt.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
  resolve(lt.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
  resolve(lt.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
  resolve(lt.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
  if (!status.ok()) return status;
  return lt;
}

}  // namespace

absl::StatusOr<const CublasLt*> LoadCublasLt() {
  static const absl::StatusOr<CublasLt>* const library = new absl::StatusOr<CublasLt>(Load());
  if (!library->ok()) return library->status();
  return &**library;
}

}  // namespace sinkserve::cuda
