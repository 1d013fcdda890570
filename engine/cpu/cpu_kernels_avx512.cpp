// Dense (F32/F16/BF16) matrix rows with AVX-512: 16 weights converted to fp32 in registers per
// load, tiles walked by avx512_tiles.h. Compiled with the AVX-512 flags; cpu_kernels.cpp calls
// it only on a CPU that has them (cpu_isa.h).
#include "engine/cpu/avx512_tiles.h"
#include "engine/cpu/cpu_kernels_isa.h"

namespace sinkserve::cpu {
namespace {

template <DType kDType>
class DenseFormat {
 public:
  static constexpr int kVectors = 1;
  static constexpr bool kBlockScaled = false;
  // A conversion in registers costs less than PackedTile's buffer round trips (fp16 prefill,
  // 410m matrices, one core: 105–115 GFLOP/s in registers, 89–101 packed).
  static constexpr bool kPackForPrompts = false;
  // Decode reads 8 rows at once; asking for each row's line 1 KB ahead keeps more lines in
  // flight (two threads, fp16 decode: 410m 33.4 → 37.5 tok/s, 160m 100 → 113).
  static constexpr bool kDecodePrefetch = true;

  explicit DenseFormat(const Matrix& w) : data_(w.data), cols_(w.cols) {}
  int64_t cols() const { return cols_; }

  __m512 Load(int64_t row, int64_t block, int) const {
    const std::byte* p = At(row, block * 16);
    if constexpr (kDType == DType::kF32) {
      return _mm512_loadu_ps(p);
    } else if constexpr (kDType == DType::kF16) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    } else {
      return Bf16ToFloat(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
  }

  __m512 LoadPartial(int64_t row, int64_t k, __mmask16 mask) const {
    const std::byte* p = At(row, k);
    if constexpr (kDType == DType::kF32) {
      return _mm512_maskz_loadu_ps(mask, p);
    } else if constexpr (kDType == DType::kF16) {
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
    } else {
      return Bf16ToFloat(_mm256_maskz_loadu_epi16(mask, p));
    }
  }

  float Finish(int64_t, float sum) const { return sum; }
  const void* BlockAddress(int64_t row, int64_t block) const { return At(row, block * 16); }
  int64_t block_bytes() const { return 16 * static_cast<int64_t>(DTypeSize(kDType)); }

 private:
  const std::byte* At(int64_t row, int64_t k) const {
    return data_ + (row * cols_ + k) * static_cast<int64_t>(DTypeSize(kDType));
  }
  static __m512 Bf16ToFloat(__m256i bits) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }

  const std::byte* data_;
  int64_t cols_;
};

template <DType kDType>
void Rows(const MatMulArgs& args, int64_t row_begin, int64_t row_end) {
  // 8 rows alone (decode), 6 rows × 4 tokens: 24 accumulators + 4 inputs + 1 weight vector
  // (4 × 4: 72 → 91 GFLOP/s for fp16 prefill on one core).
  avx512::Rows<DenseFormat<kDType>, 8, 6>(DenseFormat<kDType>(*args.w), args, row_begin, row_end);
}

}  // namespace

void MatMulRowsAvx512(const MatMulArgs& args, int64_t row_begin, int64_t row_end) {
  switch (args.w->dtype) {
    case DType::kF32:
      return Rows<DType::kF32>(args, row_begin, row_end);
    case DType::kF16:
      return Rows<DType::kF16>(args, row_begin, row_end);
    case DType::kBF16:
      return Rows<DType::kBF16>(args, row_begin, row_end);
    default:
      return;  // weights are validated to be F32/F16/BF16 at load
  }
}

}  // namespace sinkserve::cpu
