#include "server/http/openai_request.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace sinkserve::server::http {
namespace {

using Json = nlohmann::json;

constexpr int kMaxNesting = 64;

absl::Status Invalid(const std::string& param, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(param, ": ", what));
}

const char* TypeName(const Json& value) {
  if (value.is_number_integer()) return "an integer";
  if (value.is_number()) return "a number";
  return value.type_name();
}

absl::Status WrongType(const std::string& param, const std::string& expected, const Json& value) {
  return Invalid(param, absl::StrCat("must be ", expected, ", got ", TypeName(value)));
}

// JSON nested deeper than kMaxNesting is refused before parsing (a body of a million '[' would
// otherwise cost a million nested values).
absl::Status CheckNesting(std::string_view body) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) {
        return Invalid("body", absl::StrCat("JSON nested deeper than ", kMaxNesting, " levels"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return absl::OkStatus();
}

// The body as a JSON object.
absl::StatusOr<Json> ParseObject(std::string_view body) {
  if (absl::Status nesting = CheckNesting(body); !nesting.ok()) return nesting;
  Json json = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return Invalid("body",
                   "not valid JSON (send a JSON object with Content-Type: "
                   "application/json)");
  }
  if (!json.is_object()) return WrongType("body", "a JSON object", json);
  return json;
}

// The member `name`, or nullptr when absent or null (OpenAI clients send null for "unset").
const Json* Member(const Json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> String(const Json& value, const std::string& param) {
  if (!value.is_string()) return WrongType(param, "a string", value);
  return value.get<std::string>();
}

absl::StatusOr<bool> Bool(const Json& value, const std::string& param) {
  if (!value.is_boolean()) return WrongType(param, "true or false", value);
  return value.get<bool>();
}

absl::StatusOr<double> Number(const Json& value, const std::string& param) {
  if (!value.is_number()) return WrongType(param, "a number", value);
  return value.get<double>();
}

absl::StatusOr<int64_t> Integer(const Json& value, const std::string& param, int64_t lo,
                                int64_t hi) {
  if (!value.is_number_integer()) return WrongType(param, "an integer", value);
  if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return Invalid(param,
                   absl::StrCat("must be in [", lo, ", ", hi, "], got ", value.get<uint64_t>()));
  }
  const int64_t number = value.get<int64_t>();
  if (number < lo || number > hi) {
    return Invalid(param, absl::StrCat("must be in [", lo, ", ", hi, "], got ", number));
  }
  return number;
}

absl::StatusOr<std::string> OptionalModel(const Json& json) {
  const Json* model = Member(json, "model");
  if (model == nullptr) return std::string();
  return String(*model, "model");
}

// A token-id array ("prompt", "tokens").
absl::Status TokenIds(const Json& value, const std::string& param,
                      google::protobuf::RepeatedField<uint32_t>* out) {
  for (size_t i = 0; i < value.size(); ++i) {
    absl::StatusOr<int64_t> id = Integer(value[i], absl::StrCat(param, "[", i, "]"), 0,
                                         std::numeric_limits<uint32_t>::max());
    if (!id.ok()) return id.status();
    out->Add(static_cast<uint32_t>(*id));
  }
  return absl::OkStatus();
}

// `prompt`: a string, a token-id array, or a non-empty list of those.
absl::Status Prompts(const Json& json, std::vector<v1::GenerateRequest>* prompts) {
  const Json* prompt = Member(json, "prompt");
  if (prompt == nullptr) return Invalid("prompt", "required (a string, token ids, or a list)");
  if (prompt->is_string()) {
    prompts->emplace_back().set_prompt_text(prompt->get<std::string>());
    return absl::OkStatus();
  }
  if (!prompt->is_array()) {
    return WrongType("prompt", "a string, an array of token ids, or an array of those", *prompt);
  }
  if (prompt->empty()) return Invalid("prompt", "must not be an empty list");
  if ((*prompt)[0].is_number()) {
    return TokenIds(*prompt, "prompt", prompts->emplace_back().mutable_prompt_token_ids());
  }
  for (size_t i = 0; i < prompt->size(); ++i) {
    const Json& item = (*prompt)[i];
    const std::string param = absl::StrCat("prompt[", i, "]");
    v1::GenerateRequest& request = prompts->emplace_back();
    if (item.is_string()) {
      request.set_prompt_text(item.get<std::string>());
    } else if (item.is_array()) {
      if (absl::Status ids = TokenIds(item, param, request.mutable_prompt_token_ids()); !ids.ok()) {
        return ids;
      }
    } else {
      return WrongType(param, "a string or an array of token ids", item);
    }
  }
  return absl::OkStatus();
}

// `cache_policy`: "dense", {"dense": capacity}, or {"sink": S, "window": W}.
absl::Status Policy(const Json& value, v1::CachePolicy* out) {
  constexpr char kShape[] = R"(must be "dense", {"dense": capacity} or {"sink": S, "window": W})";
  if (value.is_string()) {
    if (value.get<std::string>() != "dense") return Invalid("cache_policy", kShape);
    out->mutable_dense();
    return absl::OkStatus();
  }
  if (!value.is_object()) return WrongType("cache_policy", kShape, value);
  const uint32_t max = std::numeric_limits<uint32_t>::max();
  if (const Json* dense = Member(value, "dense")) {
    if (value.size() != 1) return Invalid("cache_policy", kShape);
    absl::StatusOr<int64_t> capacity = Integer(*dense, "cache_policy.dense", 0, max);
    if (!capacity.ok()) return capacity.status();
    out->mutable_dense()->set_capacity_tokens(static_cast<uint32_t>(*capacity));
    return absl::OkStatus();
  }
  const Json* sink = Member(value, "sink");
  const Json* window = Member(value, "window");
  if (sink == nullptr || window == nullptr || value.size() != 2) {
    return Invalid("cache_policy", kShape);
  }
  absl::StatusOr<int64_t> sink_tokens = Integer(*sink, "cache_policy.sink", 0, max);
  if (!sink_tokens.ok()) return sink_tokens.status();
  absl::StatusOr<int64_t> window_tokens = Integer(*window, "cache_policy.window", 0, max);
  if (!window_tokens.ok()) return window_tokens.status();
  out->mutable_streaming()->set_sink_tokens(static_cast<uint32_t>(*sink_tokens));
  out->mutable_streaming()->set_window_tokens(static_cast<uint32_t>(*window_tokens));
  return absl::OkStatus();
}

// Parameters OpenAI defines that sinkserve does not implement: refused unless neutral.
absl::Status Unsupported(const Json& json) {
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    if (const Json* value = Member(json, penalty)) {
      absl::StatusOr<double> number = Number(*value, penalty);
      if (!number.ok()) return number.status();
      if (*number != 0.0) return Invalid(penalty, "not supported (use repetition_penalty)");
    }
  }
  if (const Json* best_of = Member(json, "best_of")) {
    absl::StatusOr<int64_t> number = Integer(*best_of, "best_of", 1, 1);
    if (!number.ok()) return Invalid("best_of", "not supported (only 1)");
  }
  if (const Json* bias = Member(json, "logit_bias"); bias != nullptr && !bias->empty()) {
    return Invalid("logit_bias", "not supported");
  }
  if (const Json* suffix = Member(json, "suffix"); suffix != nullptr && !suffix->empty()) {
    return Invalid("suffix", "not supported (no insertion model)");
  }
  return absl::OkStatus();
}

// The fields every prompt's GenerateRequest shares. Chat has no max_tokens default (the
// server's applies) and also takes OpenAI's newer name, max_completion_tokens.
absl::Status Shared(const Json& json, bool chat, v1::GenerateRequest* shared) {
  if (!chat) shared->set_max_new_tokens(kDefaultMaxTokens);
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    const Json* value = Member(json, name);
    if (value == nullptr || (!chat && name != std::string_view("max_tokens"))) continue;
    absl::StatusOr<int64_t> max_tokens =
        Integer(*value, name, 0, std::numeric_limits<uint32_t>::max());
    if (!max_tokens.ok()) return max_tokens.status();
    shared->set_max_new_tokens(static_cast<uint32_t>(*max_tokens));
  }
  v1::SamplingParams* sampling = shared->mutable_sampling();
  for (const auto& [name, setter] :
       std::initializer_list<std::pair<const char*, void (v1::SamplingParams::*)(float)>>{
           {"temperature", &v1::SamplingParams::set_temperature},
           {"top_p", &v1::SamplingParams::set_top_p},
           {"repetition_penalty", &v1::SamplingParams::set_repetition_penalty}}) {
    if (const Json* value = Member(json, name)) {
      absl::StatusOr<double> number = Number(*value, name);
      if (!number.ok()) return number.status();
      (sampling->*setter)(static_cast<float>(*number));
    }
  }
  if (const Json* value = Member(json, "top_k")) {
    // vLLM's -1 means off, as our 0 does.
    absl::StatusOr<int64_t> top_k =
        Integer(*value, "top_k", -1, std::numeric_limits<uint32_t>::max());
    if (!top_k.ok()) return top_k.status();
    sampling->set_top_k(*top_k < 0 ? 0 : static_cast<uint32_t>(*top_k));
  }
  if (const Json* value = Member(json, "seed")) {
    absl::StatusOr<int64_t> seed = Integer(*value, "seed", std::numeric_limits<int64_t>::min(),
                                           std::numeric_limits<int64_t>::max());
    if (!seed.ok()) return seed.status();
    sampling->set_seed(static_cast<uint64_t>(*seed));
  }
  if (const Json* stop = Member(json, "stop")) {
    if (stop->is_string()) {
      shared->add_stop_strings(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        absl::StatusOr<std::string> text = String((*stop)[i], absl::StrCat("stop[", i, "]"));
        if (!text.ok()) return text.status();
        shared->add_stop_strings(*text);
      }
    } else {
      return WrongType("stop", "a string or an array of strings", *stop);
    }
  }
  if (const Json* value = Member(json, "ignore_eos")) {
    absl::StatusOr<bool> ignore = Bool(*value, "ignore_eos");
    if (!ignore.ok()) return ignore.status();
    shared->set_ignore_eos(*ignore);
  }
  if (const Json* value = Member(json, "session_id")) {
    absl::StatusOr<std::string> id = String(*value, "session_id");
    if (!id.ok()) return id.status();
    shared->set_session_id(*id);
  }
  if (const Json* value = Member(json, "keep_session")) {
    absl::StatusOr<bool> keep = Bool(*value, "keep_session");
    if (!keep.ok()) return keep.status();
    shared->set_keep_session(*keep);
  }
  if (const Json* value = Member(json, "cache_policy")) {
    if (absl::Status policy = Policy(*value, shared->mutable_cache_policy()); !policy.ok()) {
      return policy;
    }
  }
  return absl::OkStatus();
}

// `logprobs`: completions' number of top tokens (0..20); chat's true/false, with the number
// in `top_logprobs`.
absl::Status Logprobs(const Json& json, bool chat, CompletionRequest* request) {
  const Json* value = Member(json, "logprobs");
  if (!chat) {
    if (value == nullptr) return absl::OkStatus();
    absl::StatusOr<int64_t> logprobs = Integer(*value, "logprobs", 0, kMaxTopLogprobs);
    if (!logprobs.ok()) return logprobs.status();
    request->logprobs = static_cast<int>(*logprobs);
    return absl::OkStatus();
  }
  bool enabled = false;
  if (value != nullptr) {
    absl::StatusOr<bool> flag = Bool(*value, "logprobs");
    if (!flag.ok()) return flag.status();
    enabled = *flag;
  }
  int top = 0;
  if (const Json* top_value = Member(json, "top_logprobs")) {
    absl::StatusOr<int64_t> number = Integer(*top_value, "top_logprobs", 0, kMaxTopLogprobs);
    if (!number.ok()) return number.status();
    if (!enabled) return Invalid("top_logprobs", "needs logprobs: true");
    top = static_cast<int>(*number);
  }
  request->logprobs = enabled ? top : -1;
  return absl::OkStatus();
}

// What completions and chat completions share: model, n, logprobs, stream, the sampling,
// stop and session fields (into *shared).
absl::Status Common(const Json& json, bool chat, CompletionRequest* request,
                    v1::GenerateRequest* shared) {
  absl::StatusOr<std::string> model = OptionalModel(json);
  if (!model.ok()) return model.status();
  request->model = *model;
  if (absl::Status unsupported = Unsupported(json); !unsupported.ok()) return unsupported;
  if (const Json* value = Member(json, "n")) {
    absl::StatusOr<int64_t> n = Integer(*value, "n", 1, kMaxChoices);
    if (!n.ok()) return n.status();
    request->n = static_cast<int>(*n);
  }
  if (absl::Status logprobs = Logprobs(json, chat, request); !logprobs.ok()) return logprobs;
  if (const Json* value = Member(json, "stream")) {
    absl::StatusOr<bool> flag = Bool(*value, "stream");
    if (!flag.ok()) return flag.status();
    request->stream = *flag;
  }
  if (const Json* options = Member(json, "stream_options")) {
    if (!options->is_object()) return WrongType("stream_options", "an object", *options);
    if (!request->stream) return Invalid("stream_options", "only with stream: true");
    if (const Json* value = Member(*options, "include_usage")) {
      absl::StatusOr<bool> flag = Bool(*value, "stream_options.include_usage");
      if (!flag.ok()) return flag.status();
      request->include_usage = *flag;
    }
  }
  if (absl::Status status = Shared(json, chat, shared); !status.ok()) return status;
  if ((!shared->session_id().empty() || shared->keep_session()) && request->n != 1) {
    return Invalid(shared->session_id().empty() ? "keep_session" : "session_id",
                   "a session runs one prompt with n = 1");
  }
  return absl::OkStatus();
}

// A chat message's content: a string, null, or a list of text parts (joined by newlines).
absl::StatusOr<Json> MessageContent(const Json& content, const std::string& param) {
  if (content.is_string() || content.is_null()) return content;
  if (!content.is_array()) {
    return WrongType(param, "a string or an array of {\"type\": \"text\", \"text\": ...} parts",
                     content);
  }
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string part = absl::StrCat(param, "[", i, "]");
    if (!content[i].is_object()) return WrongType(part, "an object", content[i]);
    const Json* type = Member(content[i], "type");
    if (type == nullptr || *type != "text") {
      return Invalid(part + ".type", "only \"text\" parts are supported");
    }
    const Json* part_text = Member(content[i], "text");
    if (part_text == nullptr) return Invalid(part + ".text", "required");
    absl::StatusOr<std::string> value = String(*part_text, part + ".text");
    if (!value.ok()) return value.status();
    if (i > 0) text += '\n';
    text += *value;
  }
  return Json(text);
}

// `messages`: a non-empty array of {role, content, ...}; other members go to the template as
// they are, in the order the body has them (`ordered`: the body parsed keeping it).
absl::StatusOr<nlohmann::ordered_json> Messages(const Json& json, nlohmann::ordered_json ordered) {
  const Json* messages = Member(json, "messages");
  if (messages == nullptr) return Invalid("messages", "required (an array of {role, content})");
  if (!messages->is_array()) return WrongType("messages", "an array of {role, content}", *messages);
  if (messages->empty()) return Invalid("messages", "must not be empty");
  nlohmann::ordered_json out = std::move(ordered["messages"]);
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!message.is_object()) return WrongType(param, "an object with role and content", message);
    const Json* role = Member(message, "role");
    if (role == nullptr) return Invalid(param + ".role", "required");
    if (absl::StatusOr<std::string> text = String(*role, param + ".role"); !text.ok()) {
      return text.status();
    }
    absl::StatusOr<Json> content = MessageContent(
        message.contains("content") ? message["content"] : Json(nullptr), param + ".content");
    if (!content.ok()) return content.status();
    out[i]["content"] = std::move(*content);
  }
  return out;
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body) {
  absl::StatusOr<Json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  const Json& json = *parsed;
  CompletionRequest request;
  v1::GenerateRequest shared;
  if (absl::Status status = Common(json, false, &request, &shared); !status.ok()) return status;
  if (const Json* value = Member(json, "echo")) {
    absl::StatusOr<bool> flag = Bool(*value, "echo");
    if (!flag.ok()) return flag.status();
    request.echo = *flag;
  }
  if (absl::Status status = Prompts(json, &request.prompts); !status.ok()) return status;
  if (request.prompts.size() * static_cast<size_t>(request.n) > kMaxChoices) {
    return Invalid("n", absl::StrCat("n × prompts must be at most ", kMaxChoices, ", got ",
                                     request.prompts.size() * static_cast<size_t>(request.n)));
  }
  if ((!shared.session_id().empty() || shared.keep_session()) && request.prompts.size() != 1) {
    return Invalid(shared.session_id().empty() ? "keep_session" : "session_id",
                   "a session runs one prompt with n = 1");
  }
  for (v1::GenerateRequest& prompt : request.prompts) {
    v1::GenerateRequest merged = shared;
    merged.MergeFrom(prompt);
    merged.set_return_logprobs(request.logprobs >= 0);
    prompt = std::move(merged);
  }
  return request;
}

absl::StatusOr<ChatRequest> ParseChatRequest(std::string_view body) {
  absl::StatusOr<Json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  const Json& json = *parsed;
  ChatRequest chat;
  v1::GenerateRequest shared;
  if (absl::Status status = Common(json, true, &chat.completion, &shared); !status.ok()) {
    return status;
  }
  absl::StatusOr<nlohmann::ordered_json> messages =
      Messages(json, nlohmann::ordered_json::parse(body, nullptr, false));
  if (!messages.ok()) return messages.status();
  chat.messages = std::move(*messages);
  shared.set_return_logprobs(chat.completion.logprobs >= 0);
  chat.completion.prompts.push_back(std::move(shared));
  return chat;
}

absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(std::string_view body) {
  absl::StatusOr<Json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  TokenizeRequest request;
  absl::StatusOr<std::string> model = OptionalModel(*parsed);
  if (!model.ok()) return model.status();
  request.model = *model;
  const char* name = Member(*parsed, "prompt") != nullptr ? "prompt" : "content";
  const Json* text = Member(*parsed, name);
  if (text == nullptr) return Invalid("prompt", "required (the text to tokenize)");
  absl::StatusOr<std::string> value = String(*text, name);
  if (!value.ok()) return value.status();
  request.text = *value;
  return request;
}

absl::StatusOr<DetokenizeRequest> ParseDetokenizeRequest(std::string_view body) {
  absl::StatusOr<Json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  DetokenizeRequest request;
  absl::StatusOr<std::string> model = OptionalModel(*parsed);
  if (!model.ok()) return model.status();
  request.model = *model;
  const Json* tokens = Member(*parsed, "tokens");
  if (tokens == nullptr) return Invalid("tokens", "required (an array of token ids)");
  if (!tokens->is_array()) return WrongType("tokens", "an array of token ids", *tokens);
  google::protobuf::RepeatedField<uint32_t> ids;
  if (absl::Status status = TokenIds(*tokens, "tokens", &ids); !status.ok()) return status;
  request.tokens.assign(ids.begin(), ids.end());
  return request;
}

std::string OpenAiParam(std::string_view proto_field) {
  const std::string_view name = proto_field.substr(0, proto_field.find('['));
  if (name == "prompt_text" || name == "prompt_token_ids") return "prompt";
  if (name == "max_new_tokens") return "max_tokens";
  if (name == "stop_strings") return "stop";
  if (name.starts_with("sampling.")) return std::string(name.substr(9));
  if (name.starts_with("cache_policy")) return "cache_policy";
  return std::string(name);
}

absl::Status ToOpenAiNames(const absl::Status& status) {
  const std::string message(status.message());
  const size_t colon = message.find(": ");
  if (status.ok() || colon == std::string_view::npos) return status;
  const std::string_view field = std::string_view(message).substr(0, colon);
  if (field.find(' ') != std::string_view::npos) return status;
  std::string param = OpenAiParam(field);
  if (param == "prompt" || param == "stop") {
    const size_t bracket = field.find('[');  // keep the position: "prompt[3]"
    if (bracket != std::string_view::npos) param += field.substr(bracket);
  }
  return absl::Status(status.code(), absl::StrCat(param, message.substr(colon)));
}

}  // namespace sinkserve::server::http
