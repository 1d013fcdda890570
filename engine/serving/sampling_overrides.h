// Sampling fields a request or a session sets over the defaults.
#pragma once

#include <cstdint>
#include <optional>

#include "engine/sampler.h"

namespace sinkserve {

// Sampling fields set by a request or a session; unset ones fall back (request → session →
// SamplingParams defaults).
struct SamplingOverrides {
  std::optional<float> temperature;
  std::optional<int> top_k;
  std::optional<float> top_p;
  std::optional<float> repetition_penalty;
  std::optional<uint64_t> seed;

  // These fields over `base`'s: a field set here wins.
  SamplingOverrides Over(const SamplingOverrides& base) const;
  // SamplingParams defaults with the set fields replaced.
  SamplingParams Resolve() const;
};

}  // namespace sinkserve
