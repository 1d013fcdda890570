#include "engine/format/quant.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace sinkserve {
namespace {

// fp32 midpoints between consecutive NF4 values: code = how many lie strictly below x.
constexpr std::array<float, 15> Nf4Midpoints() {
  std::array<float, 15> midpoints{};
  for (int k = 0; k < 15; ++k) midpoints[k] = (kNf4Values[k] + kNf4Values[k + 1]) / 2.0f;
  return midpoints;
}
constexpr std::array<float, 15> kNf4Midpoints = Nf4Midpoints();

std::array<float, 255> DynamicMapMidpoints() {
  std::array<float, 255> midpoints{};
  for (int k = 0; k < 255; ++k) midpoints[k] = (kDynamicMap[k] + kDynamicMap[k + 1]) / 2.0f;
  return midpoints;
}

uint8_t Nf4Code(float normalized) {
  // The count of midpoints strictly below, without branches: a binary search mispredicts on
  // every other comparison and made quantizing a 410m model 3× slower.
  int code = 0;
  for (float midpoint : kNf4Midpoints) code += midpoint < normalized ? 1 : 0;
  return static_cast<uint8_t>(code);
}

}  // namespace

void QuantizeInt8Row(std::span<const float> row, int8_t* codes, float* absmax_out) {
  float absmax = 0.0f;
  for (float value : row) absmax = std::max(absmax, std::abs(value));
  *absmax_out = absmax;
  if (absmax == 0.0f) {  // bnb: NaN codes, cast to 0 on x86; explicit here
    std::fill(codes, codes + row.size(), int8_t{0});
    return;
  }
  // Two roundings, as torch evaluates 127.0 / t: reciprocal, then times 127.
  const float scale = (1.0f / absmax) * 127.0f;
  for (size_t c = 0; c < row.size(); ++c) {
    codes[c] = static_cast<int8_t>(std::clamp(std::nearbyint(row[c] * scale), -127.0f, 127.0f));
  }
}

Int8Rows QuantizeInt8Rows(std::span<const float> w, int64_t rows, int64_t cols) {
  Int8Rows q{rows, cols, std::vector<int8_t>(rows * cols), std::vector<float>(rows)};
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeInt8Row(w.subspan(r * cols, cols), &q.codes[r * cols], &q.row_absmax[r]);
  }
  return q;
}

void DequantizeInt8Rows(const Int8Rows& q, std::span<float> out) {
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t c = 0; c < q.cols; ++c) {
      out[r * q.cols + c] = DequantizeInt8(q.codes[r * q.cols + c], q.row_absmax[r]);
    }
  }
}

void QuantizeNf4Block(const float* x, uint8_t* codes, float* absmax_out) {
  float absmax = 0.0f;
  for (int i = 0; i < kNf4BlockSize; ++i) absmax = std::max(absmax, std::abs(x[i]));
  *absmax_out = absmax;
  // bnb: x · (1 / max(absmax, 1e-38)), clamped; an all-zero block maps to code 7 (zero).
  const float inverse = 1.0f / std::max(absmax, 1e-38f);
  for (int i = 0; i < kNf4BlockSize; i += 2) {
    const uint8_t high = Nf4Code(std::clamp(x[i] * inverse, -1.0f, 1.0f));
    const uint8_t low = Nf4Code(std::clamp(x[i + 1] * inverse, -1.0f, 1.0f));
    codes[i / 2] = static_cast<uint8_t>(high << 4 | low);
  }
}

Nf4Blocks QuantizeNf4(std::span<const float> w) {
  const int64_t numel = static_cast<int64_t>(w.size());
  Nf4Blocks q{numel, std::vector<uint8_t>(numel / 2), std::vector<float>(numel / kNf4BlockSize)};
  for (int64_t block = 0; block < numel / kNf4BlockSize; ++block) {
    QuantizeNf4Block(w.data() + block * kNf4BlockSize, &q.codes[block * kNf4BlockSize / 2],
                     &q.block_absmax[block]);
  }
  return q;
}

void DequantizeNf4(const Nf4Blocks& q, std::span<float> out) {
  for (int64_t i = 0; i < q.numel; ++i) {
    out[i] = kNf4Values[Nf4CodeAt(q.codes.data(), i)] * q.block_absmax[i / kNf4BlockSize];
  }
}

QuantizedAbsmax DoubleQuantize(std::span<const float> absmax) {
  double sum = 0.0;
  for (float value : absmax) sum += value;
  return DoubleQuantize(absmax, absmax.empty() ? 0.0f : static_cast<float>(sum / absmax.size()));
}

QuantizedAbsmax DoubleQuantize(std::span<const float> absmax, float offset) {
  static const std::array<float, 255> midpoints = DynamicMapMidpoints();
  const size_t n = absmax.size();
  QuantizedAbsmax q{std::vector<uint8_t>(n),
                    std::vector<float>((n + kDoubleQuantBlockSize - 1) / kDoubleQuantBlockSize),
                    offset};
  for (size_t block = 0; block < q.block_scale.size(); ++block) {
    const size_t begin = block * kDoubleQuantBlockSize;
    const size_t end = std::min(n, begin + kDoubleQuantBlockSize);
    float scale = 0.0f;
    for (size_t i = begin; i < end; ++i) scale = std::max(scale, std::abs(absmax[i] - offset));
    q.block_scale[block] = scale;
    const float inverse = 1.0f / std::max(scale, 1e-38f);
    for (size_t i = begin; i < end; ++i) {
      const float normalized = std::clamp((absmax[i] - offset) * inverse, -1.0f, 1.0f);
      // Nearest map value; exactly between two takes the lower (the count of midpoints below).
      q.codes[i] = static_cast<uint8_t>(
          std::lower_bound(midpoints.begin(), midpoints.end(), normalized) - midpoints.begin());
    }
  }
  return q;
}

void DequantizeAbsmax(const QuantizedAbsmax& q, std::span<float> out) {
  for (size_t i = 0; i < q.codes.size(); ++i) out[i] = DequantizeAbsmaxAt(q, i);
}

}  // namespace sinkserve
