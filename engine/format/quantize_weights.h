// Load-time conversion of a model's matrices (docs/formats.md): another dense width, or int8 / NF4
// quantization of every linear layer of the blocks (qkv, attention.dense, dense_h_to_4h,
// dense_4h_to_h). Embeddings stay 16-bit unless asked otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/base/thread_pool.h"
#include "engine/format/weights.h"

namespace sinkserve {

// The weight format a model runs with.
enum class WeightFormat : uint8_t {
  kAsStored,  // every matrix as the checkpoint stores it (F32, F16 or BF16)
  kF32,       // every matrix converted to fp32
  kF16,       // every matrix converted to fp16
  kBF16,      // every matrix converted to bf16
  kInt8,      // block matrices int8 (per-row absmax); embeddings 16-bit
  kNf4,       // block matrices NF4 (blocks of 64); embeddings 16-bit
};

// "as-stored", "fp32", "fp16", "bf16", "int8", "nf4".
std::string_view WeightFormatName(WeightFormat format);
// The inverse for the user-facing names fp32|fp16|bf16|int8|nf4; nullopt otherwise.
std::optional<WeightFormat> ParseWeightFormat(std::string_view name);

struct WeightConversion {
  WeightFormat format = WeightFormat::kAsStored;
  bool double_quant = false;         // NF4 only: absmax 8-bit quantized (bnb compress_statistics)
  bool quantize_embeddings = false;  // int8 / NF4 only: embed_in and embed_out too

  // INVALID_ARGUMENT naming the option when the combination means nothing.
  absl::Status Validate() const;
  // E.g. "nf4 + double-quant absmax, embeddings F16".
  std::string Describe(const ModelWeights& converted) const;
};

// Called after each matrix with the elements converted so far and in all.
using ConversionProgress = std::function<void(int64_t done, int64_t total)>;

// Converts `weights` in place, in parallel on `pool`. Embeddings that are not quantized are
// kept 16-bit: F32 becomes F16, F16 and BF16 stay as they are. The memory of every converted
// source is given back as soon as it is converted (owned buffers freed; pages of the mapped
// checkpoint released, and the mapping dropped once nothing views it), so the peak stays near
// the converted size. Memory that `weights` does not own is only read. Errors (INVALID_ARGUMENT)
// name the matrix that cannot be quantized.
absl::Status ConvertWeights(const WeightConversion& conversion, ModelWeights& weights,
                            ThreadPool& pool, const ConversionProgress& progress = nullptr);

}  // namespace sinkserve
