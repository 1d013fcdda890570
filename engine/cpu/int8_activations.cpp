#include "engine/cpu/int8_activations.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_kernels.h"
#include "engine/format/quant.h"

namespace sinkserve::cpu {

std::optional<Activations> ParseActivations(std::string_view name) {
  if (name == "fp32") return Activations::kFp32;
  if (name == "int8") return Activations::kInt8;
  return std::nullopt;
}

// round(kNf4Values[c] · 127).
const int8_t kNf4Int8Values[16] = {-127, -88, -67, -50, -36, -23, -12, 0,
                                   10,   20,  31,  43,  56,  71,  92,  127};

bool Int8ActivationsApply(const Matrix& w) {
  return (w.quant == QuantFormat::kInt8 || w.quant == QuantFormat::kNf4) &&
         w.cols % kActivationBlock == 0;
}

void QuantizeActivations(const float* x, int64_t cols, int n_tokens, BlockOrder order,
                         QuantizedActivations& out) {
  const int64_t blocks = cols / kActivationBlock;
  out.cols = cols;
  out.n_tokens = n_tokens;
  out.codes.resize(static_cast<size_t>(n_tokens) * cols);
  out.scales.resize(static_cast<size_t>(n_tokens) * blocks);
  out.offset_sums.resize(static_cast<size_t>(n_tokens) * cols / 4);
  // Adding then subtracting 1.5·2^23 rounds |v| < 2^22 to the nearest integer, ties to even
  // (the default rounding mode; no libm call, and the loop vectorizes).
  constexpr float kRound = 12582912.0f;
  for (int64_t block = 0; block < n_tokens * blocks; ++block) {
    const float* in = x + block * kActivationBlock;
    int8_t* codes = &out.codes[block * kActivationBlock];
    float amax = 0.0f;
    bool finite = true;
    for (int k = 0; k < kActivationBlock; ++k) {
      const float a = std::fabs(in[k]);
      finite = finite && a <= std::numeric_limits<float>::max();
      amax = std::max(amax, a);
    }
    const float inverse = 127.0f / amax;
    if (!finite || !(inverse <= std::numeric_limits<float>::max())) {
      // Zeros, or so tiny that 127/amax overflows (amax < 127/FLT_MAX ≈ 3.7e-37): codes 0,
      // scale 0. Inf or NaN: scale NaN, so the outputs are NaN, as the exact path's would be.
      std::fill(codes, codes + kActivationBlock, int8_t{0});
      out.scales[block] = finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
      std::fill_n(&out.offset_sums[block * (kActivationBlock / 4)], kActivationBlock / 4, 0);
      continue;
    }
    for (int k = 0; k < kActivationBlock; ++k) {
      const int at = order == BlockOrder::kNatural ? k : (k < 32 ? 2 * k : 2 * (k - 32) + 1);
      codes[k] = static_cast<int8_t>((in[at] * inverse + kRound) - kRound);
    }
    out.scales[block] = amax / 127.0f;
    for (int j = 0; j < kActivationBlock / 4; ++j) {
      out.offset_sums[block * (kActivationBlock / 4) + j] =
          -128 * (codes[4 * j] + codes[4 * j + 1] + codes[4 * j + 2] + codes[4 * j + 3]);
    }
  }
}

namespace {

// The formulas of int8_activations.h, one block sum at a time: code(row, k) is the integer
// weight, scale(row, b, d_b) the fp32 scale of block b's sum, row_scale(row) the final factor.
template <class Code, class Scale, class RowScale>
void PortableRows(const Int8MatMulArgs& a, int64_t begin, int64_t end, Code code, Scale scale,
                  RowScale row_scale) {
  const QuantizedActivations& x = *a.x;
  const int64_t cols = a.w->cols, blocks = cols / kActivationBlock;
  for (int64_t row = begin; row < end; ++row) {
    for (int t = 0; t < x.n_tokens; ++t) {
      float sum = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const int8_t* xq = &x.codes[(t * blocks + b) * kActivationBlock];
        int32_t s = 0;
        for (int k = 0; k < kActivationBlock; ++k) s += code(row, b * kActivationBlock + k) * xq[k];
        sum += scale(row, b, x.scales[t * blocks + b]) * static_cast<float>(s);
      }
      const float bias = a.bias != nullptr ? a.bias[row] : 0.0f;
      a.y[t * a.w->rows + row] = sum * row_scale(row) + bias;
    }
  }
}

}  // namespace

void Int8WeightsInt8ActivationsPortable(const Int8MatMulArgs& a, int64_t begin, int64_t end) {
  const Int8Rows& w = *a.w->int8;
  PortableRows(
      a, begin, end, [&](int64_t row, int64_t k) { return w.codes[row * w.cols + k]; },
      [](int64_t, int64_t, float d) { return d; },
      [&](int64_t row) { return w.row_absmax[row] * kInverse127; });
}

void Nf4WeightsInt8ActivationsPortable(const Int8MatMulArgs& a, int64_t begin, int64_t end) {
  const Matrix& w = *a.w;
  const int64_t blocks_per_row = w.cols / kNf4BlockSize;
  PortableRows(
      a, begin, end,
      [&](int64_t row, int64_t k) {
        return kNf4Int8Values[Nf4CodeAt(w.nf4->codes.data(), row * w.cols + k)];
      },
      [&](int64_t row, int64_t b, float d) {
        const int64_t block = row * blocks_per_row + b;
        return d * (w.nf4_absmax != nullptr ? DequantizeAbsmaxAt(*w.nf4_absmax, block)
                                            : w.nf4->block_absmax[block]);
      },
      [](int64_t) { return kInverse127; });
}

Int8RowsFunction Int8ActivationRows(const Matrix& w, CpuIsa isa, BlockOrder* order) {
  const bool nf4 = w.quant == QuantFormat::kNf4;
  *order = BlockOrder::kNatural;
#if defined(__x86_64__)
  const CpuIsa resolved = ResolveCpuIsa(isa);
  if (resolved == CpuIsa::kAvx512 || resolved == CpuIsa::kAvx2) {
    if (nf4) *order = BlockOrder::kEvenOdd;
    if (resolved == CpuIsa::kAvx512 && CpuHasAvx512Vnni()) {
      return nf4 ? Nf4WeightsInt8ActivationsVnni : Int8WeightsInt8ActivationsVnni;
    }
    return nf4 ? Nf4WeightsInt8ActivationsAvx2 : Int8WeightsInt8ActivationsAvx2;
  }
#else
  (void)isa;
#endif
  return nf4 ? Nf4WeightsInt8ActivationsPortable : Int8WeightsInt8ActivationsPortable;
}

const char* Int8ActivationsIsaName(CpuIsa isa) {
  const CpuIsa resolved = ResolveCpuIsa(isa);
  if (resolved == CpuIsa::kAvx512 && CpuHasAvx512Vnni()) return "avx512f+bw+vl+dq+vnni";
  if (resolved == CpuIsa::kAvx512) return CpuIsaName(CpuIsa::kAvx2);
  return CpuIsaName(resolved);
}

void MatMulInt8Activations(const Matrix& w, const float* bias, const float* x, int n_tokens,
                           float* y, ThreadPool& pool, CpuIsa isa) {
  if (!Int8ActivationsApply(w)) {
    MatMul(w, bias, x, n_tokens, y, pool, isa);
    return;
  }
  BlockOrder order;
  const Int8RowsFunction rows = Int8ActivationRows(w, isa, &order);
  // Quantized once per call, on the calling thread (a few µs per token), then read by every
  // thread's rows.
  thread_local QuantizedActivations quantized;
  QuantizeActivations(x, w.cols, n_tokens, order, quantized);
  const Int8MatMulArgs args{&w, bias, &quantized, y};
  pool.ParallelFor(w.rows, 64, [&](int64_t begin, int64_t end, int) { rows(args, begin, end); });
}

}  // namespace sinkserve::cpu
