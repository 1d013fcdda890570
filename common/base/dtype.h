// Element types of checkpoint tensors, spelled as safetensors spells them.
//
// Header-only on purpose: every layer (safetensors reader, weights, backends) needs these three
// functions and none of them should pull in a library for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sinkserve {

// The dtypes sinkserve reads. Safetensors knows more (U16, U32, U64, C64, F8_*, F4, F6_*);
// those are rejected by the reader with an "unsupported dtype" error rather than guessed at.
enum class DType : uint8_t { kF32, kF16, kBF16, kF64, kI8, kU8, kI16, kI32, kI64, kBool };

// Bytes per element. kBool is one byte per element, as in safetensors and PyTorch.
constexpr size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kF64:
      return 8;
    case DType::kI8:
      return 1;
    case DType::kU8:
      return 1;
    case DType::kI16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kBool:
      return 1;
  }
  return 0;  // unreachable for valid enumerators
}

// The safetensors spelling: "F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL".
constexpr std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kF64:
      return "F64";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI16:
      return "I16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kBool:
      return "BOOL";
  }
  return "?";  // unreachable for valid enumerators
}

// Inverse of DTypeName. Exact, case-sensitive match (the official reader is case-sensitive too);
// nullopt for anything else, including dtypes safetensors knows but sinkserve does not read.
constexpr std::optional<DType> ParseDType(std::string_view safetensors_name) {
  constexpr DType kAll[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF64, DType::kI8,
                            DType::kU8,  DType::kI16, DType::kI32,  DType::kI64, DType::kBool};
  for (DType dtype : kAll) {
    if (DTypeName(dtype) == safetensors_name) return dtype;
  }
  return std::nullopt;
}

}  // namespace sinkserve
