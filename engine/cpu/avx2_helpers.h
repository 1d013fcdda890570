// Small AVX2 helpers shared by the kernels compiled with -mavx2 (include only from those).
#pragma once

#include <immintrin.h>

namespace sinkserve::cpu {

inline float HorizontalSum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

}  // namespace sinkserve::cpu
