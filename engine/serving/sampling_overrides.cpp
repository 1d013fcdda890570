#include "engine/serving/sampling_overrides.h"

namespace sinkserve {

SamplingOverrides SamplingOverrides::Over(const SamplingOverrides& base) const {
  SamplingOverrides merged = base;
  if (temperature) merged.temperature = temperature;
  if (top_k) merged.top_k = top_k;
  if (top_p) merged.top_p = top_p;
  if (repetition_penalty) merged.repetition_penalty = repetition_penalty;
  if (seed) merged.seed = seed;
  return merged;
}

SamplingParams SamplingOverrides::Resolve() const {
  SamplingParams params;
  if (temperature) params.temperature = *temperature;
  if (top_k) params.top_k = *top_k;
  if (top_p) params.top_p = *top_p;
  if (repetition_penalty) params.repetition_penalty = *repetition_penalty;
  if (seed) params.seed = *seed;
  return params;
}

}  // namespace sinkserve
