#include "server/validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/base/utf8.h"

namespace sinkserve::server {
namespace {

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

}  // namespace

RequestValidator::RequestValidator(const Model& model, const RequestLimits& limits)
    : model_(model), limits_(limits) {}

absl::Status RequestValidator::SessionId(const std::string& id) const {
  if (id.empty()) return Invalid("session_id", "required");
  if (static_cast<int>(id.size()) > limits_.max_session_id_chars) {
    return Invalid("session_id", absl::StrCat("at most ", limits_.max_session_id_chars,
                                              " characters, got ", id.size()));
  }
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      return Invalid("session_id", "only letters, digits, '_' and '-' (ids come from "
                                   "CreateSession or GenerateResponse.session_id)");
    }
  }
  return absl::OkStatus();
}

absl::Status RequestValidator::TokenId(uint32_t id, const std::string& field) const {
  if (id >= static_cast<uint32_t>(model_.config().vocab_size)) {
    return Invalid(field, absl::StrCat(id, " is outside the vocabulary [0, ",
                                       model_.config().vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<CachePolicy>> RequestValidator::Policy(
    bool present, const v1::CachePolicy& policy, const std::string& field) const {
  if (!present) return std::nullopt;
  const int64_t context = model_.config().max_position_embeddings;
  CachePolicy result;
  switch (policy.policy_case()) {
    case v1::CachePolicy::kStreaming: {
      const v1::StreamingCache& streaming = policy.streaming();
      if (streaming.window_tokens() < 1) {
        return Invalid(field + ".streaming.window_tokens", "must be at least 1");
      }
      if (static_cast<int64_t>(streaming.sink_tokens()) + streaming.window_tokens() > context) {
        return Invalid(field + ".streaming", absl::StrCat(
            "sink_tokens + window_tokens must be at most the model's context of ", context,
            ", got ", static_cast<int64_t>(streaming.sink_tokens()) + streaming.window_tokens()));
      }
      result.kind = CachePolicy::Kind::kCachePolicyStreaming;
      result.sink_tokens = static_cast<int>(streaming.sink_tokens());
      result.window_tokens = static_cast<int>(streaming.window_tokens());
      return result;
    }
    case v1::CachePolicy::kDense:
      if (policy.dense().capacity_tokens() > context) {
        return Invalid(field + ".dense.capacity_tokens",
                       absl::StrCat("must be at most the model's context of ", context, ", got ",
                                    policy.dense().capacity_tokens()));
      }
      result.kind = CachePolicy::Kind::kCachePolicyDense;
      result.dense_capacity_tokens = static_cast<int>(policy.dense().capacity_tokens());
      return result;
    case v1::CachePolicy::POLICY_NOT_SET:
      break;
  }
  return Invalid(field, "set either streaming or dense (or leave cache_policy unset)");
}

absl::StatusOr<SamplingOverrides> RequestValidator::Sampling(const v1::SamplingParams& sampling,
                                                             const std::string& field) const {
  SamplingOverrides result;
  if (sampling.has_temperature()) {
    const float t = sampling.temperature();
    if (!std::isfinite(t) || t < 0.0f || t > 100.0f) {
      return Invalid(field + ".temperature", absl::StrCat("must be in [0, 100] (0 = greedy), got ", t));
    }
    result.temperature = t;
  }
  if (sampling.has_top_k()) {
    if (sampling.top_k() > static_cast<uint32_t>(model_.config().vocab_size)) {
      return Invalid(field + ".top_k", absl::StrCat("must be at most the vocabulary size ",
                                                    model_.config().vocab_size, " (0 = off), got ",
                                                    sampling.top_k()));
    }
    result.top_k = static_cast<int>(sampling.top_k());
  }
  if (sampling.has_top_p()) {
    const float p = sampling.top_p();
    if (!std::isfinite(p) || !(p > 0.0f && p <= 1.0f)) {
      return Invalid(field + ".top_p", absl::StrCat("must be in (0, 1] (1 = off), got ", p));
    }
    result.top_p = p;
  }
  if (sampling.has_repetition_penalty()) {
    const float r = sampling.repetition_penalty();
    if (!std::isfinite(r) || !(r > 0.0f && r <= 10.0f)) {
      return Invalid(field + ".repetition_penalty",
                     absl::StrCat("must be in (0, 10] (1 = off), got ", r));
    }
    result.repetition_penalty = r;
  }
  if (sampling.has_seed()) result.seed = sampling.seed();
  return result;
}

absl::StatusOr<std::vector<int32_t>> RequestValidator::Tokens(
    const std::string& text, const std::string& text_field,
    const google::protobuf::RepeatedField<uint32_t>& ids, const std::string& ids_field,
    int max_tokens, const std::string& limit_flag) const {
  if (!text.empty() && !ids.empty()) {
    return Invalid(text_field, absl::StrCat("give ", text_field, " or ", ids_field, ", not both"));
  }
  std::vector<int32_t> tokens;
  if (!text.empty()) {
    if (absl::Status valid = utf8::Validate(text); !valid.ok()) {
      return Invalid(text_field, std::string(valid.message()));
    }
    const Tokenizer* tokenizer = model_.tokenizer();
    if (tokenizer == nullptr) {
      return Invalid(text_field, absl::StrCat("model ", model_.name(),
                                              " has no tokenizer.json; send ", ids_field));
    }
    // Each token is at least one byte: a text this long cannot be within the limit.
    if (text.size() > static_cast<size_t>(max_tokens) * 256) {
      return Invalid(text_field, absl::StrCat(text.size(), " bytes is far beyond the server's ",
                                              "limit of ", max_tokens, " tokens (", limit_flag, ")"));
    }
    absl::StatusOr<std::vector<int32_t>> encoded = tokenizer->Encode(text);
    if (!encoded.ok()) return Invalid(text_field, std::string(encoded.status().message()));
    tokens = std::move(*encoded);
    if (static_cast<int>(tokens.size()) > max_tokens) {
      return Invalid(text_field, absl::StrCat(tokens.size(), " tokens, more than the server's limit of ",
                                              max_tokens, " (", limit_flag, ")"));
    }
    return tokens;
  }
  if (ids.size() > max_tokens) {
    return Invalid(ids_field, absl::StrCat(ids.size(), " tokens, more than the server's limit of ",
                                           max_tokens, " (", limit_flag, ")"));
  }
  tokens.reserve(ids.size());
  for (int i = 0; i < ids.size(); ++i) {
    if (absl::Status status = TokenId(ids[i], absl::StrCat(ids_field, "[", i, "]")); !status.ok()) {
      return status;
    }
    tokens.push_back(static_cast<int32_t>(ids[i]));
  }
  return tokens;
}

absl::StatusOr<GenerateSpec> RequestValidator::Generate(const v1::GenerateRequest& request) const {
  GenerateSpec spec;
  if (!request.session_id().empty()) {
    if (absl::Status status = SessionId(request.session_id()); !status.ok()) return status;
    if (request.keep_session()) {
      return Invalid("keep_session", "only for a new stream (session_id is set, and a session "
                                     "is always kept)");
    }
    if (request.has_cache_policy()) {
      return Invalid("cache_policy", "must be unset when continuing a session (its cache exists)");
    }
  }
  spec.session_id = request.session_id();
  spec.keep_session = request.keep_session();
  absl::StatusOr<std::optional<CachePolicy>> policy =
      Policy(request.has_cache_policy(), request.cache_policy(), "cache_policy");
  if (!policy.ok()) return policy.status();
  spec.policy = *policy;

  absl::StatusOr<std::vector<int32_t>> prompt =
      Tokens(request.prompt_text(), "prompt_text", request.prompt_token_ids(), "prompt_token_ids",
             limits_.max_prompt_tokens, "--max-prompt-tokens");
  if (!prompt.ok()) return prompt.status();
  spec.prompt = std::move(*prompt);

  absl::StatusOr<SamplingOverrides> sampling = Sampling(request.sampling(), "sampling");
  if (!sampling.ok()) return sampling.status();
  spec.sampling = *sampling;

  spec.max_new_tokens = limits_.default_max_new_tokens;
  if (request.has_max_new_tokens()) {
    if (request.max_new_tokens() > static_cast<uint32_t>(limits_.max_new_tokens)) {
      return Invalid("max_new_tokens", absl::StrCat("must be at most the server's limit of ",
                                                    limits_.max_new_tokens,
                                                    " (--max-new-tokens), got ",
                                                    request.max_new_tokens()));
    }
    spec.max_new_tokens = static_cast<int>(request.max_new_tokens());
  }
  // A one-shot dense stream cannot hold a prompt longer than the model's context.
  const int64_t context = model_.config().max_position_embeddings;
  const bool dense = spec.policy ? spec.policy->kind == CachePolicy::Kind::kCachePolicyDense
                                 : false;
  if (dense && static_cast<int64_t>(spec.prompt.size()) > context) {
    return absl::OutOfRangeError(absl::StrCat(
        request.prompt_text().empty() ? "prompt_token_ids" : "prompt_text", ": ",
        spec.prompt.size(), " tokens do not fit a dense cache (the model's context is ", context,
        " tokens); use a streaming cache"));
  }

  if (request.stop_strings_size() > limits_.max_stop_strings) {
    return Invalid("stop_strings", absl::StrCat("at most ", limits_.max_stop_strings,
                                                " stop strings, got ", request.stop_strings_size()));
  }
  if (request.stop_strings_size() > 0 && model_.tokenizer() == nullptr) {
    return Invalid("stop_strings", "the model has no tokenizer.json, so there is no text to match");
  }
  for (int i = 0; i < request.stop_strings_size(); ++i) {
    const std::string& stop = request.stop_strings(i);
    const std::string field = absl::StrCat("stop_strings[", i, "]");
    if (stop.empty()) return Invalid(field, "must not be empty");
    if (static_cast<int>(stop.size()) > limits_.max_stop_string_bytes) {
      return Invalid(field, absl::StrCat("at most ", limits_.max_stop_string_bytes,
                                         " bytes, got ", stop.size()));
    }
    if (absl::Status valid = utf8::Validate(stop); !valid.ok()) {
      return Invalid(field, std::string(valid.message()));
    }
    spec.stop_strings.push_back(stop);
  }
  if (request.stop_token_ids_size() > limits_.max_stop_token_ids) {
    return Invalid("stop_token_ids", absl::StrCat("at most ", limits_.max_stop_token_ids,
                                                  " ids, got ", request.stop_token_ids_size()));
  }
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    if (absl::Status status =
            TokenId(request.stop_token_ids(i), absl::StrCat("stop_token_ids[", i, "]"));
        !status.ok()) {
      return status;
    }
    spec.stop_token_ids.push_back(static_cast<int32_t>(request.stop_token_ids(i)));
  }
  if (!request.ignore_eos() && model_.tokenizer() != nullptr) {
    if (std::optional<int32_t> eos = model_.tokenizer()->eos_token_id()) {
      spec.stop_token_ids.push_back(*eos);
    }
  }
  spec.return_logprobs = request.return_logprobs();
  return spec;
}

absl::StatusOr<ScoreSpec> RequestValidator::Score(const v1::ScoreRequest& request) const {
  ScoreSpec spec;
  absl::StatusOr<std::vector<int32_t>> tokens =
      Tokens(request.text(), "text", request.token_ids(), "token_ids", limits_.max_score_tokens,
             "--max-score-tokens");
  if (!tokens.ok()) return tokens.status();
  const std::string field = request.text().empty() ? "token_ids" : "text";
  if (tokens->size() < 2) {
    return Invalid(field, absl::StrCat("scoring needs at least 2 tokens, got ", tokens->size()));
  }
  spec.tokens = std::move(*tokens);
  absl::StatusOr<std::optional<CachePolicy>> policy =
      Policy(request.has_cache_policy(), request.cache_policy(), "cache_policy");
  if (!policy.ok()) return policy.status();
  spec.policy = *policy;
  const int64_t context = model_.config().max_position_embeddings;
  if (spec.policy && spec.policy->kind == CachePolicy::Kind::kCachePolicyDense) {
    const int64_t fed = static_cast<int64_t>(spec.tokens.size()) - 1;
    const int64_t capacity =
        spec.policy->dense_capacity_tokens > 0 ? spec.policy->dense_capacity_tokens : context;
    if (fed > capacity) {
      return absl::OutOfRangeError(absl::StrCat(
          field, ": ", spec.tokens.size(), " tokens need a dense cache of ", fed,
          " tokens, more than ", capacity, " (the model's context is ", context,
          "); score fewer tokens or use a streaming cache"));
    }
  }
  spec.return_token_nll = request.return_token_nll();
  spec.progress_interval_tokens = request.progress_interval_tokens() > 0
                                      ? static_cast<int>(std::min<uint32_t>(
                                            request.progress_interval_tokens(), 1u << 30))
                                      : limits_.default_progress_interval_tokens;
  return spec;
}

}  // namespace sinkserve::server
