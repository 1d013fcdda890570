#include "engine/format/quantize_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/half.h"
#include "engine/format/safetensors.h"

namespace sinkserve {
namespace {

bool IsQuantized(WeightFormat format) {
  return format == WeightFormat::kInt8 || format == WeightFormat::kNf4;
}

// One matrix to convert: where its view lives and a name for errors.
struct Job {
  Matrix* matrix;
  std::string name;
  bool quantize;  // else: dense, to `dtype`
  DType dtype;
};

class Converter {
 public:
  Converter(const WeightConversion& conversion, ModelWeights& weights, ThreadPool& pool)
      : conversion_(conversion), weights_(weights), pool_(pool), scratch_(pool.size()) {}

  absl::Status Convert(const Job& job) {
    const Matrix source = *job.matrix;
    if (!job.quantize) {
      if (source.dtype == job.dtype) return absl::OkStatus();
      *job.matrix = ToDense(source, job.dtype);
    } else if (conversion_.format == WeightFormat::kInt8) {
      *job.matrix = ToInt8(source);
    } else {
      if ((source.rows * source.cols) % kNf4BlockSize != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            job.name, " [", source.rows, ", ", source.cols, "] has ", source.rows * source.cols,
            " elements, not a multiple of the NF4 block of ", kNf4BlockSize,
            "; use --quant int8 for this model"));
      }
      *job.matrix = ToNf4(source);
    }
    Release(source);
    return absl::OkStatus();
  }

  // Drops the checkpoint mapping once no dense matrix views it any more.
  void DropUnusedCheckpoint() {
    auto views_checkpoint = [&](const Matrix& m) {
      return m.quant == QuantFormat::kNone && InCheckpoint(m.data);
    };
    bool used = views_checkpoint(weights_.embed_in) || views_checkpoint(weights_.embed_out);
    for (const LayerWeights& layer : weights_.layers) {
      for (const Matrix* m : {&layer.qkv, &layer.attn_out, &layer.mlp_up, &layer.mlp_down}) {
        used = used || views_checkpoint(*m);
      }
    }
    if (!used) weights_.checkpoint.reset();
  }

 private:
  // Rows [begin, end) of `source` in fp32, in this thread's scratch.
  float* SourceRows(const Matrix& source, int64_t begin, int64_t end, int thread) {
    std::vector<float>& scratch = scratch_[thread];
    scratch.resize(static_cast<size_t>((end - begin) * source.cols));
    for (int64_t r = begin; r < end; ++r) source.RowToFloat(r, &scratch[(r - begin) * source.cols]);
    return scratch.data();
  }

  Matrix ToDense(const Matrix& source, DType dtype) {
    const size_t width = DTypeSize(dtype);
    auto buffer =
        std::make_unique<std::byte[]>(static_cast<size_t>(source.rows * source.cols) * width);
    std::byte* out = buffer.get();
    pool_.ParallelFor(source.rows, 16, [&](int64_t begin, int64_t end, int thread) {
      const float* values = SourceRows(source, begin, end, thread);
      for (int64_t i = 0; i < (end - begin) * source.cols; ++i) {
        std::byte* at = out + static_cast<size_t>(begin * source.cols + i) * width;
        if (dtype == DType::kF32) {
          std::memcpy(at, &values[i], 4);
        } else {
          const uint16_t bits =
              dtype == DType::kF16 ? FloatToF16(values[i]) : FloatToBf16(values[i]);
          std::memcpy(at, &bits, 2);
        }
      }
    });
    const Matrix converted{dtype, source.rows, source.cols, out};
    weights_.owned.push_back(std::move(buffer));
    return converted;
  }

  Matrix ToInt8(const Matrix& source) {
    const int64_t rows = source.rows, cols = source.cols;
    auto q = std::make_unique<Int8Rows>(
        Int8Rows{rows, cols, std::vector<int8_t>(rows * cols), std::vector<float>(rows)});
    pool_.ParallelFor(rows, 16, [&](int64_t begin, int64_t end, int thread) {
      const float* values = SourceRows(source, begin, end, thread);
      for (int64_t r = begin; r < end; ++r) {
        QuantizeInt8Row(std::span(values + (r - begin) * cols, cols), &q->codes[r * cols],
                        &q->row_absmax[r]);
      }
    });
    const Matrix converted = Matrix::Int8(*q);
    weights_.int8_storage.push_back(std::move(q));
    return converted;
  }

  Matrix ToNf4(const Matrix& source) {
    const int64_t rows = source.rows, cols = source.cols, numel = rows * cols;
    auto q = std::make_unique<Nf4Blocks>(Nf4Blocks{numel, std::vector<uint8_t>(numel / 2),
                                                   std::vector<float>(numel / kNf4BlockSize)});
    // Blocks run across rows when cols % 64 != 0: work in units of rows that hold whole blocks.
    const int64_t unit = kNf4BlockSize / std::gcd(cols, int64_t{kNf4BlockSize});
    pool_.ParallelFor(rows / unit, std::max<int64_t>(1, 16 / unit),
                      [&](int64_t begin, int64_t end, int thread) {
                        const float* values = SourceRows(source, begin * unit, end * unit, thread);
                        const int64_t first_block = begin * unit * cols / kNf4BlockSize;
                        const int64_t blocks = (end - begin) * unit * cols / kNf4BlockSize;
                        for (int64_t b = 0; b < blocks; ++b) {
                          QuantizeNf4Block(values + b * kNf4BlockSize,
                                           &q->codes[(first_block + b) * (kNf4BlockSize / 2)],
                                           &q->block_absmax[first_block + b]);
                        }
                      });
    const QuantizedAbsmax* absmax = nullptr;
    if (conversion_.double_quant) {
      auto dq = std::make_unique<QuantizedAbsmax>(DoubleQuantize(q->block_absmax));
      std::vector<float>().swap(q->block_absmax);  // the fp32 absmax are not kept
      absmax = dq.get();
      weights_.nf4_absmax_storage.push_back(std::move(dq));
    }
    const Matrix converted = Matrix::Nf4(*q, rows, cols, absmax);
    weights_.nf4_storage.push_back(std::move(q));
    return converted;
  }

  bool InCheckpoint(const std::byte* data) const {
    return weights_.checkpoint != nullptr && weights_.checkpoint->IsMapped(data);
  }

  // Gives back a converted source's memory: an owned buffer is freed; the pages of the mapped
  // checkpoint it covers are released (a read-only private file mapping: a later read would
  // fault them back in from the file, so this is safe even if something still looked).
  // Memory owned by neither (a caller's buffer) is left alone.
  void Release(const Matrix& source) {
    if (source.quant != QuantFormat::kNone) return;
    auto owned = std::find_if(weights_.owned.begin(), weights_.owned.end(),
                              [&](const auto& buffer) { return buffer.get() == source.data; });
    if (owned != weights_.owned.end()) {
      weights_.owned.erase(owned);
      return;
    }
    if (!InCheckpoint(source.data)) return;
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(source.data) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(source.data) + source.bytes()) / page * page;
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }

  const WeightConversion& conversion_;
  ModelWeights& weights_;
  ThreadPool& pool_;
  std::vector<std::vector<float>> scratch_;  // [threads] fp32 rows of the source
};

}  // namespace

std::string_view WeightFormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kAsStored:
      return "as-stored";
    case WeightFormat::kF32:
      return "fp32";
    case WeightFormat::kF16:
      return "fp16";
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kNf4:
      return "nf4";
  }
  return "?";  // unreachable for valid enumerators
}

std::optional<WeightFormat> ParseWeightFormat(std::string_view name) {
  for (WeightFormat format : {WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kBF16,
                              WeightFormat::kInt8, WeightFormat::kNf4}) {
    if (WeightFormatName(format) == name) return format;
  }
  return std::nullopt;
}

absl::Status WeightConversion::Validate() const {
  if (double_quant && format != WeightFormat::kNf4) {
    return absl::InvalidArgumentError(
        absl::StrCat("double quantization applies to nf4 weights only, not ",
                     std::string(WeightFormatName(format))));
  }
  if (quantize_embeddings && !IsQuantized(format)) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantizing the embeddings needs int8 or nf4 weights, not ",
                     std::string(WeightFormatName(format))));
  }
  return absl::OkStatus();
}

std::string WeightConversion::Describe(const ModelWeights& converted) const {
  const Matrix& embeddings = converted.embed_in;
  const std::string embedding_format = embeddings.quant == QuantFormat::kNone
                                           ? std::string(DTypeName(embeddings.dtype))
                                           : std::string(WeightFormatName(format));
  if (format == WeightFormat::kAsStored) return absl::StrCat("as stored (", embedding_format, ")");
  if (!IsQuantized(format)) return std::string(WeightFormatName(format));
  return absl::StrCat(std::string(WeightFormatName(format)),
                      double_quant ? " + double-quantized absmax" : "", ", embeddings ",
                      embedding_format);
}

absl::Status ConvertWeights(const WeightConversion& conversion, ModelWeights& weights,
                            ThreadPool& pool, const ConversionProgress& progress) {
  if (absl::Status status = conversion.Validate(); !status.ok()) return status;
  if (conversion.format == WeightFormat::kAsStored) return absl::OkStatus();
  const bool quantize = IsQuantized(conversion.format);
  const DType dense = conversion.format == WeightFormat::kF32    ? DType::kF32
                      : conversion.format == WeightFormat::kBF16 ? DType::kBF16
                                                                 : DType::kF16;
  std::vector<Job> jobs;
  for (size_t i = 0; i < weights.layers.size(); ++i) {
    LayerWeights& layer = weights.layers[i];
    const std::string prefix = absl::StrCat("layer ", i, " ");
    jobs.push_back({&layer.qkv, prefix + "attention.query_key_value", quantize, dense});
    jobs.push_back({&layer.attn_out, prefix + "attention.dense", quantize, dense});
    jobs.push_back({&layer.mlp_up, prefix + "mlp.dense_h_to_4h", quantize, dense});
    jobs.push_back({&layer.mlp_down, prefix + "mlp.dense_4h_to_h", quantize, dense});
  }
  const bool tied = weights.embed_out.storage() == weights.embed_in.storage();
  for (Matrix* embedding : {&weights.embed_in, &weights.embed_out}) {
    if (embedding == &weights.embed_out && tied) break;
    const std::string name = embedding == &weights.embed_in ? "embed_in" : "embed_out";
    if (!quantize) {
      jobs.push_back({embedding, name, false, dense});
    } else if (conversion.quantize_embeddings) {
      jobs.push_back({embedding, name, true, dense});
    } else {
      // Not quantized: 16-bit. F32 → F16; BF16 stays (converting it would gain nothing).
      jobs.push_back({embedding, name, false,
                      embedding->dtype == DType::kF32 ? DType::kF16 : embedding->dtype});
    }
  }

  int64_t total = 0, done = 0;
  for (const Job& job : jobs) total += job.matrix->rows * job.matrix->cols;
  Converter converter(conversion, weights, pool);
  for (const Job& job : jobs) {
    if (absl::Status status = converter.Convert(job); !status.ok()) return status;
    done += job.matrix->rows * job.matrix->cols;
    if (progress) progress(done, total);
  }
  if (tied) weights.embed_out = weights.embed_in;
  converter.DropUnusedCheckpoint();
  return absl::OkStatus();
}

}  // namespace sinkserve
