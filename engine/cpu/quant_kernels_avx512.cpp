// Int8 and NF4 matrix rows with AVX-512, dequantizing in registers (the weights are never
// written out in fp32); tiles walked by avx512_tiles.h. Compiled with the AVX-512 flags;
// cpu_kernels.cpp calls these only on a CPU that has them (cpu_isa.h).
#include <array>

#include "engine/cpu/avx512_tiles.h"
#include "engine/cpu/cpu_kernels_isa.h"

namespace sinkserve::cpu {
namespace {

// ---- int8: y = (Σ_k q[k]·x[k]) · absmax·fp32(1/127) + bias ----

class Int8Format {
 public:
  static constexpr int kVectors = 1;
  static constexpr bool kBlockScaled = false;
  // As for fp16 (cpu_kernels_avx512.cpp): 111–123 GFLOP/s in registers, 97–106 packed.
  static constexpr bool kPackForPrompts = false;
  static constexpr bool kDecodePrefetch = true;  // two threads: 410m 55.8 → 58.9 tok/s

  explicit Int8Format(const Matrix& w) : q_(*w.int8) {}
  int64_t cols() const { return q_.cols; }

  __m512 Load(int64_t row, int64_t block, int) const {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(At(row, block * 16)))));
  }
  __m512 LoadPartial(int64_t row, int64_t k, __mmask16 mask) const {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, At(row, k))));
  }
  float Finish(int64_t row, float sum) const { return sum * (q_.row_absmax[row] * kInverse127); }
  const void* BlockAddress(int64_t row, int64_t block) const { return At(row, block * 16); }
  int64_t block_bytes() const { return 16; }

 private:
  const int8_t* At(int64_t row, int64_t k) const { return &q_.codes[row * q_.cols + k]; }
  const Int8Rows& q_;
};

// ---- NF4: y = Σ_blocks absmax_b · (Σ_{k in b} nf4[code_k]·x[k]) + bias ----
//
// A block's 32 code bytes are broadcast to both halves of a zmm (8 dwords, twice); vector v
// shifts each dword right by 4·(2v + half) with one vpsrlvd, so every lane's low 4 bits hold a
// different code, and one vpermps looks the 16 codes up in the 16 NF4 values held in a zmm
// (it reads only the low 4 bits of each index). Two instructions per 16 weights. The lanes
// come out in a fixed order within the block (kNf4Order); the input is reordered to match,
// once per call (Nf4InputOrderAvx512), not the weights.

// Decoded value j of a block (vector v = j / 16, lane p = j % 16): dword d = p % 8 of the
// codes, nibble n = 2v + p / 8 of it, i.e. byte 4d + n/2, element 2·byte + 1 for a low nibble
// (n even), 2·byte for a high one.
constexpr std::array<uint8_t, kNf4BlockSize> Nf4Order() {
  std::array<uint8_t, kNf4BlockSize> order{};
  for (int j = 0; j < kNf4BlockSize; ++j) {
    const int v = j / 16, p = j % 16, d = p % 8, nibble = 2 * v + p / 8;
    order[j] = static_cast<uint8_t>(2 * (4 * d + nibble / 2) + (nibble % 2 == 0 ? 1 : 0));
  }
  return order;
}
constexpr std::array<uint8_t, kNf4BlockSize> kNf4Order = Nf4Order();

class Nf4Format {
 public:
  static constexpr int kVectors = kNf4BlockSize / 16;
  static constexpr bool kBlockScaled = true;
  // Decoding (shift + lookup + block scales) once per 32 prompt tokens instead of once per 2-4:
  // 60–64 → 84–86 GFLOP/s for NF4 prefill (410m matrices, one core).
  static constexpr bool kPackForPrompts = true;
  // Its decode is bound by the lookups, not by loads: prefetching measured slower (two
  // threads, 410m 68.4 → 60.5 tok/s).
  static constexpr bool kDecodePrefetch = false;

  explicit Nf4Format(const Matrix& w)
      : w_(w), blocks_per_row_(w.cols / kNf4BlockSize), values_(_mm512_loadu_ps(kNf4Values)) {
    for (int v = 0; v < kVectors; ++v) {
      alignas(64) uint32_t shifts[16];
      for (int p = 0; p < 16; ++p) shifts[p] = 4 * (2 * v + p / 8);
      shifts_[v] = _mm512_load_si512(shifts);
    }
  }
  int64_t cols() const { return w_.cols; }

  __m512 Load(int64_t row, int64_t block, int v) const {
    const uint8_t* codes = &w_.nf4->codes[(row * blocks_per_row_ + block) * (kNf4BlockSize / 2)];
    const __m512i both_halves =
        _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes)));
    return _mm512_permutexvar_ps(_mm512_srlv_epi32(both_halves, shifts_[v]), values_);
  }
  float BlockScale(int64_t row, int64_t block) const {
    // Double-quantized absmax are decoded per block on the fly (NOTES.md).
    const int64_t at = row * blocks_per_row_ + block;
    return w_.nf4_absmax != nullptr ? DequantizeAbsmaxAt(*w_.nf4_absmax, at)
                                    : w_.nf4->block_absmax[at];
  }
  float Finish(int64_t, float sum) const { return sum; }
  const void* BlockAddress(int64_t row, int64_t block) const {
    return &w_.nf4->codes[(row * blocks_per_row_ + block) * (kNf4BlockSize / 2)];
  }
  int64_t block_bytes() const { return kNf4BlockSize / 2; }

 private:
  const Matrix& w_;
  int64_t blocks_per_row_;
  __m512 values_;  // kNf4Values
  __m512i shifts_[kVectors];
};

}  // namespace

void Int8RowsAvx512(const MatMulArgs& args, int64_t row_begin, int64_t row_end) {
  // 8 rows alone (decode), 6 rows × 4 tokens: 24 accumulators + 4 inputs + 1 weight vector
  // (4 × 4: 78 → 92 GFLOP/s for int8 prefill on one core).
  avx512::Rows<Int8Format, 8, 6>(Int8Format(*args.w), args, row_begin, row_end);
}

void Nf4RowsAvx512(const MatMulArgs& args, int64_t row_begin, int64_t row_end) {
  // 8 rows alone, 2 rows × 4 tokens: block sums and accumulators (2 per output), 4 inputs,
  // the value table and 4 shift vectors fit the 32 zmm registers.
  avx512::Rows<Nf4Format, 8, 2>(Nf4Format(*args.w), args, row_begin, row_end);
}

void Nf4InputOrderAvx512(const float* x, int64_t cols, int n_tokens, float* out) {
  for (int64_t begin = 0; begin < n_tokens * cols; begin += kNf4BlockSize) {
    for (int j = 0; j < kNf4BlockSize; ++j) out[begin + j] = x[begin + kNf4Order[j]];
  }
}

}  // namespace sinkserve::cpu
