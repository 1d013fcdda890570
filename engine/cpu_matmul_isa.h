// Internal to the CPU kernels: the per-ISA row kernels behind cpu::MatMul.
#pragma once

#include <cstdint>

#include "engine/weights.h"

namespace sinkserve::cpu {

struct MatMulArgs {
  const Matrix* w;     // [rows][cols], stored dtype
  const float* bias;   // [rows] or nullptr
  const float* x;      // [n_tokens][cols]
  int n_tokens;
  float* y;            // [n_tokens][rows]
};

// Computes output rows [row_begin, row_end) for every token.
void MatMulRowsPortable(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
#if defined(__x86_64__)
void MatMulRowsAvx2(const MatMulArgs& args, int64_t row_begin, int64_t row_end);
#endif

}  // namespace sinkserve::cpu
