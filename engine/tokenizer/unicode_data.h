// Raw Unicode tables for the tokenizer, generated into unicode_data.cpp by
// scripts/gen/make_unicode_data.py (measured from HF `tokenizers`; see there why).
// Only unicode.cpp reads these; everything else uses the queries in unicode.h.
#pragma once

#include <cstdint>

namespace sinkserve::unicode_data {

struct CharFlagRange {
  char32_t first;
  char32_t last;  // inclusive
  uint8_t flags;  // CharFlag bits (unicode.h)
};

struct CodePointValue {
  char32_t code_point;
  uint8_t value;
};

struct Decomposition {
  char32_t code_point;
  uint16_t offset;  // into kDecompositionPool
  uint8_t length;
};

struct Composition {
  char32_t first;
  char32_t second;
  char32_t composite;
};

extern const CharFlagRange kCharFlagRanges[];  // sorted, disjoint
extern const int kCharFlagRangeCount;
extern const CodePointValue kCombiningRanks[];  // sorted by code point
extern const int kCombiningRankCount;
extern const Decomposition kDecompositions[];  // sorted by code point
extern const int kDecompositionCount;
extern const char32_t kDecompositionPool[];
extern const Composition kCompositions[];  // sorted by (first, second)
extern const int kCompositionCount;

}  // namespace sinkserve::unicode_data
