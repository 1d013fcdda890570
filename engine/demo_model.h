// The built-in demo model: a small random GPT-NeoX built in memory from a fixed seed, with the
// byte-level demo tokenizer, so sinkserve runs out of the box with no download. Its output is
// random text: everything that shows it says so.
#pragma once

#include "engine/format/config.h"
#include "engine/format/weights.h"

namespace sinkserve {

inline constexpr char kDemoModelName[] = "demo (random weights, byte-level tokenizer)";

// 4 layers × hidden 256 × 4 heads (d=64, rotary 16), FFN 1024, vocab 257, context 2048.
ModelConfig DemoModelConfig();

// The demo's weights: random fp32 from `seed` (same seed, same weights on every machine). The
// LM head favours printable ASCII bytes so the random text is at least readable.
ModelWeights DemoModelWeights(const ModelConfig& config, uint64_t seed);

// Random weights of any GPT-NeoX shape, matrices stored as `dtype` (F32, F16 or BF16): for
// benchmarks and tests that need a model of a real size without a download.
ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed, DType dtype);

}  // namespace sinkserve
