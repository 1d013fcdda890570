#include "server/http/chat_completions.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "server/http/openai_server.h"

namespace sinkserve::server::http {
namespace {

using Json = nlohmann::json;
using Part = ResponseFormat::Part;

constexpr char kEndpoint[] = "/v1/chat/completions";

// A token as chat logprobs show it: its text, and its bytes (the text may not be whole UTF-8).
Json ChatToken(const Model& model, int32_t token, double logprob) {
  const std::string text = TokenString(model, token);
  Json bytes = Json::array();
  for (unsigned char byte : text) bytes.push_back(byte);
  return {{"token", text}, {"logprob", logprob}, {"bytes", std::move(bytes)}};
}

// Chat's `logprobs`: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
class ChatLogprobs final : public LogprobsBuilder {
 public:
  explicit ChatLogprobs(const Model& model) : model_(&model) {}

  void Add(int32_t token, std::optional<double> logprob,
           const std::vector<TokenLogprob>& top) override {
    Json entry = ChatToken(*model_, token, logprob.value_or(0.0));
    Json candidates = Json::array();
    for (const TokenLogprob& candidate : top) {
      candidates.push_back(ChatToken(*model_, candidate.token, candidate.logprob));
    }
    entry["top_logprobs"] = std::move(candidates);
    content_.push_back(std::move(entry));
  }

  Json Take() override { return {{"content", std::exchange(content_, Json::array())}}; }

 private:
  const Model* model_;
  Json content_ = Json::array();
};

class ChatFormat final : public ResponseFormat {
 public:
  const char* endpoint() const override { return kEndpoint; }
  const char* id_prefix() const override { return "chatcmpl-"; }
  const char* prompt_param() const override { return "messages"; }
  const char* object(Part part) const override {
    return part == Part::kWhole ? "chat.completion" : "chat.completion.chunk";
  }
  std::unique_ptr<LogprobsBuilder> NewLogprobs(const Model& model) const override {
    return std::make_unique<ChatLogprobs>(model);
  }
  Json Choice(size_t index, std::string text, Json logprobs, Json finish_reason,
              Part part) const override {
    Json choice = {{"index", index}};
    if (part == Part::kWhole) {
      choice["message"] = {{"role", "assistant"}, {"content", std::move(text)}};
    } else {
      Json delta = Json::object();
      if (part == Part::kFirstChunk) delta["role"] = "assistant";
      if (part == Part::kFirstChunk || !text.empty()) delta["content"] = std::move(text);
      choice["delta"] = std::move(delta);
    }
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] = std::move(finish_reason);
    return choice;
  }
};

}  // namespace

void HandleChatCompletions(const CompletionContext& context, const ChatTemplate* chat_template,
                           const httplib::Request& request, httplib::Response& response) {
  static const ChatFormat kFormat;
  if (chat_template == nullptr) {
    return ReplyError(context.metrics, kEndpoint,
                      absl::InvalidArgumentError(absl::StrCat(
                          "messages: model '", context.model_id,
                          "' has no chat template (none in its tokenizer_config.json or "
                          "chat_template.jinja, and no `sinkserve serve --chat-template FILE`; "
                          "Pythia is a base model): send a prompt to POST /v1/completions")),
                      response);
  }
  absl::StatusOr<ChatRequest> chat = ParseChatRequest(request.body);
  if (!chat.ok()) return ReplyError(context.metrics, kEndpoint, chat.status(), response);
  nlohmann::ordered_json variables = {{"messages", std::move(chat->messages)},
                                      {"add_generation_prompt", true}};
  absl::StatusOr<std::string> prompt = chat_template->Render(variables);
  if (!prompt.ok()) {
    return ReplyError(
        context.metrics, kEndpoint,
        absl::InvalidArgumentError(absl::StrCat("messages: ", prompt.status().message())),
        response);
  }
  chat->completion.prompts.front().set_prompt_text(*prompt);
  ServeCompletion(context, kFormat, std::move(chat->completion), request, response);
}

}  // namespace sinkserve::server::http
