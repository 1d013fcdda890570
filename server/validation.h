// Request validation: every field of a sinkserve.v1 request is checked (ranges, UTF-8,
// lengths, formats) and turned into the engine's types. Errors are absl statuses with the
// docs/api.md codes whose message starts with the field's name ("sampling.top_p: ...").
// Runs on transport threads: it only reads the model's immutable config and tokenizer.
#pragma once

#include <chrono>
#include <optional>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/serving/scheduler.h"
#include "sinkserve/v1/sinkserve.pb.h"

namespace sinkserve::server {

// Per-request limits (flags of `sinkserve serve`).
struct RequestLimits {
  int max_prompt_tokens = 32768;
  int max_new_tokens = 4096;
  int default_max_new_tokens = 128;
  int max_score_tokens = 262144;
  int max_stop_strings = 16;
  int max_stop_string_bytes = 256;
  int max_stop_token_ids = 64;
  int default_progress_interval_tokens = 1024;
  int max_session_id_chars = 64;
};

class RequestValidator {
 public:
  // `model` must outlive the validator.
  RequestValidator(const Model& model, const RequestLimits& limits);

  absl::StatusOr<GenerateSpec> Generate(const v1::GenerateRequest& request) const;
  absl::StatusOr<ScoreSpec> Score(const v1::ScoreRequest& request) const;
  // A cache_policy field; nullopt when unset.
  absl::StatusOr<std::optional<CachePolicy>> Policy(bool present, const v1::CachePolicy& policy,
                                                    const std::string& field) const;
  absl::StatusOr<SamplingOverrides> Sampling(const v1::SamplingParams& sampling,
                                             const std::string& field) const;
  // A required session id.
  absl::Status SessionId(const std::string& id) const;

  const RequestLimits& limits() const { return limits_; }

 private:
  // Text or ids into token ids, with the limits of the field.
  absl::StatusOr<std::vector<int32_t>> Tokens(const std::string& text, const std::string& text_field,
                                              const google::protobuf::RepeatedField<uint32_t>& ids,
                                              const std::string& ids_field, int max_tokens,
                                              const std::string& limit_flag) const;
  absl::Status TokenId(uint32_t id, const std::string& field) const;

  const Model& model_;
  RequestLimits limits_;
};

}  // namespace sinkserve::server
