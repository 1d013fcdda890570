#include "server/convert.h"

namespace sinkserve::server {

void ToProto(const CachePolicy& policy, v1::CachePolicy* out) {
  if (policy.kind == CachePolicy::Kind::kCachePolicyDense) {
    out->mutable_dense()->set_capacity_tokens(static_cast<uint32_t>(policy.dense_capacity_tokens));
  } else {
    out->mutable_streaming()->set_sink_tokens(static_cast<uint32_t>(policy.sink_tokens));
    out->mutable_streaming()->set_window_tokens(static_cast<uint32_t>(policy.window_tokens));
  }
}

void ToProto(const SamplingOverrides& sampling, v1::SamplingParams* out) {
  if (sampling.temperature) out->set_temperature(*sampling.temperature);
  if (sampling.top_k) out->set_top_k(static_cast<uint32_t>(*sampling.top_k));
  if (sampling.top_p) out->set_top_p(*sampling.top_p);
  if (sampling.repetition_penalty) out->set_repetition_penalty(*sampling.repetition_penalty);
  if (sampling.seed) out->set_seed(*sampling.seed);
}

void ToProto(const SessionInfo& session, v1::Session* out) {
  out->set_session_id(session.id);
  ToProto(session.policy, out->mutable_cache_policy());
  ToProto(session.sampling_defaults, out->mutable_sampling_defaults());
  out->set_tokens_seen(static_cast<uint64_t>(session.tokens_seen));
  out->set_tokens_cached(static_cast<uint32_t>(session.tokens_cached));
  out->set_tokens_evicted(static_cast<uint64_t>(session.tokens_evicted));
  out->set_cache_bytes(session.cache_bytes);
  out->set_busy(session.busy);
  out->set_created_unix_ms(session.created_unix_ms);
  out->set_last_used_unix_ms(session.last_used_unix_ms);
  out->set_expires_in_ms(session.expires_in_ms);
  out->set_requests(session.requests);
  out->set_cache_description(session.cache_description);
  out->set_location(session.location == SessionLocation::kSessionLocationStore
                        ? v1::SESSION_LOCATION_STORE
                        : v1::SESSION_LOCATION_MEMORY);
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kFinishReasonStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kFinishReasonLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kFinishReasonCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kFinishReasonError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const GenerateResult& result, v1::GenerateResult* out) {
  out->set_finish_reason(ToProto(result.finish_reason));
  out->set_finish_detail(result.finish_detail);
  out->set_prompt_tokens(static_cast<uint32_t>(result.prompt_tokens));
  out->set_generated_tokens(static_cast<uint32_t>(result.generated_tokens));
  out->set_evicted_tokens(static_cast<uint64_t>(result.evicted_tokens));
  out->set_time_to_first_token_ms(result.timings.time_to_first_token_seconds * 1e3);
  out->set_time_per_output_token_ms(result.timings.time_per_output_token_seconds * 1e3);
  out->set_queue_time_ms(result.timings.queue_seconds * 1e3);
  out->set_attention_time_ms(result.timings.attention_seconds * 1e3);
  out->set_e2e_latency_ms(result.timings.e2e_seconds * 1e3);
  out->set_request_id(result.request_id);
  if (result.session) ToProto(*result.session, out->mutable_session());
}

void ToProto(const ScoreResult& result, v1::ScoreResult* out) {
  out->set_tokens(static_cast<uint32_t>(result.tokens));
  out->set_scored_tokens(static_cast<uint32_t>(result.scored_tokens));
  out->set_nll_mean(result.nll_mean);
  out->set_perplexity(result.perplexity);
  out->set_evicted_tokens(static_cast<uint64_t>(result.evicted_tokens));
  out->set_cache_description(result.cache_description);
  out->set_queue_time_ms(result.timings.queue_seconds * 1e3);
  out->set_attention_time_ms(result.timings.attention_seconds * 1e3);
  out->set_e2e_latency_ms(result.timings.e2e_seconds * 1e3);
  out->set_request_id(result.request_id);
}

}  // namespace sinkserve::server
