// cuBLASLt, loaded at run time with dlopen rather than linked.
//
// Why: libcublasLt.so.13 carries 94 KB of static thread-local storage. Linked into a program,
// glibc carves that out of every thread's stack, and threads created with small stacks fail to
// start — civetweb's 100 KB workers (the Prometheus exposer) did. Loaded with dlopen, its TLS
// is allocated per thread on first use instead, and programs that never use the CUDA backend
// never load it.
#pragma once

#include <cublasLt.h>

#include "absl/status/statusor.h"

namespace sinkserve::cuda {

// The entry points Gemm uses, resolved from the library.
struct CublasLt {
  decltype(&cublasLtCreate) Create;
  decltype(&cublasLtDestroy) Destroy;
  decltype(&cublasLtGetStatusString) GetStatusString;
  decltype(&cublasLtMatmul) Matmul;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy;
};

// Loads libcublasLt.so.13 once (kept for the life of the process). UNAVAILABLE saying what to
// install when it cannot be found or lacks a function.
absl::StatusOr<const CublasLt*> LoadCublasLt();

}  // namespace sinkserve::cuda
