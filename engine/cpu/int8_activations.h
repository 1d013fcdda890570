// --cpu-activations int8 (opt-in, off by default): matrix products of int8 and NF4 weights
// against activations quantized to int8, in integer arithmetic (docs/numerics.md, "Int8
// activations").
//
// Each token's input row x is quantized once per MatMul in blocks of kActivationBlock = 64:
// d_b = amax_b / 127, q[k] = round_half_even(x[k] · (127 / amax_b)) in [-127, 127] (a block
// of zeros, or one so tiny that 127 / amax_b overflows fp32: d_b = 0, codes 0; one holding an
// inf or NaN: d_b = NaN, so its outputs are NaN as the exact path's are). The weights stay as
// stored: int8 codes as they are; NF4 codes through kNf4Int8Values (round(level·127)), an extra
// approximation of the weights. Per block, S_b = Σ_{k in b} q_w[k]·q[k] exactly in int32, then
//   int8: y = (Σ_b d_b · S_b) · (absmax_row · fp32(1/127)) + bias
//   NF4:  y = (Σ_b (d_b · absmax_b) · S_b) · fp32(1/127) + bias
// with the Σ_b in fp32 (its order is the kernel's: lanes, then a reduction). Dense matrices
// (fp32/fp16/bf16) and matrices whose cols are not a multiple of 64 keep fp32 activations.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "common/base/thread_pool.h"
#include "engine/cpu/cpu_isa.h"
#include "engine/format/weights.h"

namespace sinkserve::cpu {

// --cpu-activations: kFp32 (exact, the default) or kInt8 (this file).
enum class Activations { kFp32, kInt8 };
// "fp32" or "int8"; nullopt for anything else.
std::optional<Activations> ParseActivations(std::string_view name);

inline constexpr int kActivationBlock = 64;

// round(kNf4Values[c] · 127), half away from zero (no value is a tie): -127 … 127.
extern const int8_t kNf4Int8Values[16];

// Whether MatMulInt8Activations quantizes the activations of a product with `w`: int8 or NF4
// weights with cols a multiple of kActivationBlock.
bool Int8ActivationsApply(const Matrix& w);

// Where a block's codes are stored: kNatural (k within the block), or kEvenOdd — the 32 even
// elements (2j at position j), then the 32 odd ones (2j+1 at 32 + j): the order in which the
// SIMD kernels unpack a block's NF4 codes (high nibbles, then low nibbles).
enum class BlockOrder { kNatural, kEvenOdd };

struct QuantizedActivations {
  int64_t cols = 0;  // a multiple of kActivationBlock
  int n_tokens = 0;
  std::vector<int8_t> codes;  // [n_tokens][cols], each block in `order`
  std::vector<float> scales;  // [n_tokens][cols / 64] d_b = amax_b / 127
  // [n_tokens][cols / 4]: −128 · (q[4j] + … + q[4j+3]) over stored codes 4j..4j+3, the
  // correction of a vpdpbusd lane whose weights were offset by +128.
  std::vector<int32_t> offset_sums;
};

// x: [n_tokens][cols] fp32 (cols a multiple of kActivationBlock) → out (resized).
void QuantizeActivations(const float* x, int64_t cols, int n_tokens, BlockOrder order,
                         QuantizedActivations& out);

// y[t][r] as the formulas above, for an int8 or NF4 w (Int8ActivationsApply); any other w goes
// to cpu::MatMul (exact fp32 activations). Shapes and threading as cpu::MatMul; row t of y
// does not depend on the other rows of x, bit for bit.
void MatMulInt8Activations(const Matrix& w, const float* bias, const float* x, int n_tokens,
                           float* y, ThreadPool& pool, CpuIsa isa = CpuIsa::kAuto);

// What the integer kernels of `isa` use, for banners: "avx512f+bw+vl+dq+vnni" (AVX-512 with
// VNNI), "avx2+fma+f16c" (AVX2, and AVX-512 without VNNI), "portable".
const char* Int8ActivationsIsaName(CpuIsa isa);

// ---- Internal: the kernels behind MatMulInt8Activations, tested against a reference ----

struct Int8MatMulArgs {
  const Matrix* w;                // int8 or NF4, cols % 64 == 0
  const float* bias;              // [rows] or nullptr
  const QuantizedActivations* x;  // kEvenOdd order for NF4 on the SIMD kernels
  float* y;                       // [n_tokens][rows]
};
using Int8RowsFunction = void (*)(const Int8MatMulArgs&, int64_t row_begin, int64_t row_end);

// The kernel MatMulInt8Activations runs for w on `isa`, and the block order it reads.
Int8RowsFunction Int8ActivationRows(const Matrix& w, CpuIsa isa, BlockOrder* order);

// Scalar kernels (any CPU; natural order).
void Int8WeightsInt8ActivationsPortable(const Int8MatMulArgs& a, int64_t begin, int64_t end);
void Nf4WeightsInt8ActivationsPortable(const Int8MatMulArgs& a, int64_t begin, int64_t end);
#if defined(__x86_64__)
// AVX2 (vpmaddubsw + vpmaddwd with the sign trick); NF4 in kEvenOdd order.
void Int8WeightsInt8ActivationsAvx2(const Int8MatMulArgs& a, int64_t begin, int64_t end);
void Nf4WeightsInt8ActivationsAvx2(const Int8MatMulArgs& a, int64_t begin, int64_t end);
// AVX-512 VNNI (vpdpbusd, weights offset to unsigned); NF4 in kEvenOdd order.
void Int8WeightsInt8ActivationsVnni(const Int8MatMulArgs& a, int64_t begin, int64_t end);
void Nf4WeightsInt8ActivationsVnni(const Int8MatMulArgs& a, int64_t begin, int64_t end);
#endif

}  // namespace sinkserve::cpu
