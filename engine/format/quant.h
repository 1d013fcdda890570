// Weight quantization formats, bit-exact with bitsandbytes (docs/formats.md):
//   int8 — per output row absmax (bnb's SCB), q = round_half_even(w · fp32(fp32(1/absmax)·127));
//   NF4  — blocks of 64 consecutive elements of the row-major weight, fp32 absmax per block,
//          each element → the nearest of the 16 NF4 values (a value exactly between two takes
//          the lower one), element 2j in the high nibble, 2j+1 in the low nibble.
// The rules were established against bitsandbytes 0.50.2 itself; see
// tests/fixtures/quant/README.md. Quantization happens once, at load
// (engine/format/quantize_weights.h); Matrix (engine/format/weights.h) views these structs, and the
// CPU kernels (engine/cpu/quant_kernels_avx2.cpp) read them as they are.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace sinkserve {

inline constexpr int kNf4BlockSize = 64;

// The 16 NF4 values (normal-float quantiles), ascending.
inline constexpr float kNf4Values[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

struct Int8Rows {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> codes;      // [rows][cols]
  std::vector<float> row_absmax;  // [rows] (bnb SCB); an all-zero row has 0 and codes 0
};

struct Nf4Blocks {
  int64_t numel = 0;                // a multiple of kNf4BlockSize
  std::vector<uint8_t> codes;       // [numel / 2], element 2j in the high nibble
  std::vector<float> block_absmax;  // [numel / 64]; an all-zero block has 0 and codes 7 (0x77)
};

// Double quantization of NF4 absmax values (bnb compress_statistics=True): subtract their
// mean, then 8-bit blockwise (256) quantization with bnb's signed dynamic map.
inline constexpr int kDoubleQuantBlockSize = 256;
extern const float kDynamicMap[256];  // ascending; engine/format/quant_dynamic_map.cpp (generated)

struct QuantizedAbsmax {
  std::vector<uint8_t> codes;       // [n] indices into kDynamicMap
  std::vector<float> block_scale;   // [ceil(n / 256)] max |absmax − offset| per block
  float offset = 0.0f;              // mean of the absmax values
};

// bnb's int8 dequantization constant, fp32(1/127).
inline constexpr float kInverse127 = 7.874015718698502e-3f;

// One element, exactly as the Dequantize* functions below compute it (the kernels and the
// row accessors share these so every path dequantizes the same way).
inline float DequantizeInt8(int8_t code, float row_absmax) {
  return (code * row_absmax) * kInverse127;
}
inline float DequantizeAbsmaxAt(const QuantizedAbsmax& q, int64_t i) {
  return kDynamicMap[q.codes[i]] * q.block_scale[i / kDoubleQuantBlockSize] + q.offset;
}
// The NF4 code of element i (element 2j in the high nibble).
inline int Nf4CodeAt(const uint8_t* codes, int64_t i) {
  return i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 0xf;
}

// offset defaults to the fp32 mean; pass one to reproduce another implementation's exactly
// (torch's mean may differ from ours by an ulp through its summation order).
QuantizedAbsmax DoubleQuantize(std::span<const float> absmax);
QuantizedAbsmax DoubleQuantize(std::span<const float> absmax, float offset);
// out[i] = kDynamicMap[code_i] · block_scale[i / 256] + offset.
void DequantizeAbsmax(const QuantizedAbsmax& q, std::span<float> out);

// w: [rows][cols] fp32.
Int8Rows QuantizeInt8Rows(std::span<const float> w, int64_t rows, int64_t cols);
// One row into preallocated storage (codes: [row.size()]): what QuantizeInt8Rows does per row,
// for callers that quantize a large matrix in parallel pieces without an fp32 copy of it.
void QuantizeInt8Row(std::span<const float> row, int8_t* codes, float* absmax);
// out[r][c] = (q · absmax[r]) · fp32(1/127), as bnb dequantizes.
void DequantizeInt8Rows(const Int8Rows& q, std::span<float> out);

// w.size() must be a multiple of kNf4BlockSize.
Nf4Blocks QuantizeNf4(std::span<const float> w);
// One block of kNf4BlockSize elements into codes[kNf4BlockSize / 2] and *absmax.
void QuantizeNf4Block(const float* x, uint8_t* codes, float* absmax);
// out[i] = kNf4Values[code_i] · absmax[block of i].
void DequantizeNf4(const Nf4Blocks& q, std::span<float> out);

}  // namespace sinkserve
