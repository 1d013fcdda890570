#include "server/http/openai_server.h"

#include <httplib.h>

#include <chrono>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/http/chat_completions.h"
#include "server/http/completions.h"
#include "server/http/openai_errors.h"
#include "server/http/openai_request.h"
#include "server/logging.h"

namespace sinkserve::server::http {
namespace {

using Json = nlohmann::json;

constexpr char kLoading[] = "the model is loading; retry when GET /ready answers 200";

void ReplyJson(Metrics* metrics, const char* endpoint, const Json& json,
               httplib::Response& response) {
  metrics->CountRequest("openai", endpoint, grpc::StatusCode::OK);
  response.set_content(json.dump(-1, ' ', false, Json::error_handler_t::replace),
                       "application/json");
}

std::optional<std::string_view> Header(const httplib::Request& request, const char* name) {
  if (!request.has_header(name)) return std::nullopt;
  const auto it = request.headers.find(name);
  return std::string_view(it->second);
}

}  // namespace

void ReplyError(Metrics* metrics, const char* endpoint, const absl::Status& status,
                httplib::Response& response, int http_status) {
  metrics->CountRequest("openai", endpoint, static_cast<grpc::StatusCode>(status.code()));
  response.status = http_status != 0 ? http_status : HttpStatus(status.code());
  if (response.status == 429) response.set_header("Retry-After", "1");
  if (response.status == 401) response.set_header("WWW-Authenticate", "Bearer");
  Log(response.status >= 500 ? spdlog::level::warn : spdlog::level::info, "request",
      {{"api", "openai"},
       {"endpoint", endpoint},
       {"http_status", response.status},
       {"error", std::string(status.message())}});
  response.set_content(ErrorBody(status, response.status), "application/json");
}

OpenAiServer::OpenAiServer(HttpOptions options, Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics), token_(options_.auth_token) {}

OpenAiServer::~OpenAiServer() { Stop(); }

void OpenAiServer::SetEngine(const ServingEngine* engine) {
  engine_.store(engine, std::memory_order_release);
}

absl::Status OpenAiServer::Start() {
  if (options_.tls_cert_file.empty() != options_.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (tls()) {
    auto server = std::make_unique<httplib::SSLServer>(options_.tls_cert_file.c_str(),
                                                       options_.tls_key_file.c_str());
    if (!server->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-cert ", options_.tls_cert_file, " / --tls-key ", options_.tls_key_file,
          ": the HTTP server cannot use them (unreadable, or the key does not match)"));
    }
    server_ = std::move(server);
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& server = *server_;
  const int threads = options_.threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_payload_max_length(options_.max_body_bytes);
  server.set_keep_alive_timeout(2);
  // httplib's own refusals (413 over the size limit, 404 unknown path, 400 bad HTTP) in
  // OpenAI's error shape.
  server.set_error_handler([this](const httplib::Request& request, httplib::Response& response) {
    if (!response.body.empty()) return;
    absl::Status status;
    switch (response.status) {
      case 413:
        status = absl::ResourceExhaustedError(
            absl::StrCat("body: larger than the server's limit of ", options_.max_body_bytes,
                         " bytes (--max-message-bytes)"));
        break;
      case 404:
        status =
            absl::NotFoundError(absl::StrCat("path: ", request.method, " ", request.path,
                                             " is not an endpoint here (see "
                                             "/v1/completions, /v1/chat/completions, /v1/models, "
                                             "/tokenize, /detokenize, /health, /ready)"));
        break;
      default:
        status = absl::InvalidArgumentError(absl::StrCat("request: HTTP ", response.status));
    }
    ReplyError(metrics_, "http", status, response, response.status);
  });
  server.Get("/health",
             [this](const httplib::Request&, httplib::Response& response) { Ready(response); });
  server.Get("/ready",
             [this](const httplib::Request&, httplib::Response& response) { Ready(response); });
  server.Get("/v1/models", [this](const httplib::Request& request, httplib::Response& response) {
    Models(request, response);
  });
  server.Post("/tokenize", [this](const httplib::Request& request, httplib::Response& response) {
    Tokenize(request, response);
  });
  server.Post("/detokenize", [this](const httplib::Request& request, httplib::Response& response) {
    Detokenize(request, response);
  });
  server.Post("/v1/chat/completions",
              [this](const httplib::Request& request, httplib::Response& response) {
                Chat(request, response);
              });
  server.Post("/v1/completions",
              [this](const httplib::Request& request, httplib::Response& response) {
                Completions(request, response);
              });
  port_ = options_.port == 0
              ? server.bind_to_any_port(options_.host)
              : (server.bind_to_port(options_.host, options_.port) ? options_.port : -1);
  if (port_ <= 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.host, ":",
                                               options_.port,
                                               " (is the port in use? see --http-port)"));
  }
  thread_ = std::thread([&server] { server.listen_after_bind(); });
  // httplib's stop() does nothing until the accept loop runs: wait for it, so that a Stop()
  // right after Start() (a model that fails to load) cannot leave the loop running forever.
  for (int i = 0; i < 5000 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  Log(spdlog::level::info, "listening",
      {{"openai_api",
        absl::StrCat(tls() ? "https://" : "http://", options_.host, ":", port_, "/v1")},
       {"model_id", options_.model_id}});
  return absl::OkStatus();
}

void OpenAiServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

const ServingEngine* OpenAiServer::Admit(const httplib::Request& request,
                                         httplib::Response& response, const char* endpoint) const {
  if (absl::Status authorized = token_.CheckHeader(Header(request, "Authorization"),
                                                   request.get_header_value_count("Authorization"));
      !authorized.ok()) {
    ReplyError(metrics_, endpoint, authorized, response);
    return nullptr;
  }
  const ServingEngine* engine = engine_.load(std::memory_order_acquire);
  if (engine == nullptr) {
    ReplyError(metrics_, endpoint, absl::UnavailableError(kLoading), response);
    return nullptr;
  }
  return engine;
}

void OpenAiServer::Ready(httplib::Response& response) const {
  const bool serving = engine_.load(std::memory_order_acquire) != nullptr && !draining_;
  const char* state = serving ? "SERVING" : draining_ ? "DRAINING" : "LOADING";
  response.status = serving ? 200 : 503;
  response.set_content(Json{{"status", state}}.dump(), "application/json");
}

void OpenAiServer::Models(const httplib::Request& request, httplib::Response& response) {
  const ServingEngine* engine = Admit(request, response, "/v1/models");
  if (engine == nullptr) return;
  const v1::ModelInfo& info = engine->model_info;
  Json model = {{"id", options_.model_id},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "sinkserve"},
                {"max_model_len", info.context_tokens()},
                {"root", info.model_name()}};
  ReplyJson(metrics_, "/v1/models", Json{{"object", "list"}, {"data", Json::array({model})}},
            response);
}

void OpenAiServer::Tokenize(const httplib::Request& request, httplib::Response& response) {
  constexpr char kEndpoint[] = "/tokenize";
  const ServingEngine* engine = Admit(request, response, kEndpoint);
  if (engine == nullptr) return;
  absl::StatusOr<TokenizeRequest> parsed = ParseTokenizeRequest(request.body);
  if (!parsed.ok()) return ReplyError(metrics_, kEndpoint, parsed.status(), response);
  if (!parsed->model.empty() && parsed->model != options_.model_id) {
    return ReplyError(
        metrics_, kEndpoint,
        absl::NotFoundError(absl::StrCat("model: '", parsed->model, "' is not served here")),
        response);
  }
  // The validator's prompt checks (UTF-8, the tokenizer, --max-prompt-tokens).
  v1::GenerateRequest generate;
  generate.set_prompt_text(parsed->text);
  generate.set_max_new_tokens(0);
  absl::StatusOr<GenerateSpec> spec = engine->validator->Generate(generate);
  if (!spec.ok()) return ReplyError(metrics_, kEndpoint, ToOpenAiNames(spec.status()), response);
  ReplyJson(metrics_, kEndpoint,
            Json{{"tokens", spec->prompt},
                 {"count", spec->prompt.size()},
                 {"max_model_len", engine->model_info.context_tokens()}},
            response);
}

void OpenAiServer::Detokenize(const httplib::Request& request, httplib::Response& response) {
  constexpr char kEndpoint[] = "/detokenize";
  const ServingEngine* engine = Admit(request, response, kEndpoint);
  if (engine == nullptr) return;
  absl::StatusOr<DetokenizeRequest> parsed = ParseDetokenizeRequest(request.body);
  if (!parsed.ok()) return ReplyError(metrics_, kEndpoint, parsed.status(), response);
  const Tokenizer* tokenizer = engine->model->tokenizer();
  if (tokenizer == nullptr) {
    return ReplyError(metrics_, kEndpoint,
                      absl::FailedPreconditionError("tokens: the model has no tokenizer.json"),
                      response);
  }
  std::vector<int32_t> ids(parsed->tokens.begin(), parsed->tokens.end());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (parsed->tokens[i] >= engine->model_info.vocab_size()) {
      return ReplyError(
          metrics_, kEndpoint,
          absl::InvalidArgumentError(absl::StrCat("tokens[", i, "]: ", parsed->tokens[i],
                                                  " is outside the vocabulary [0, ",
                                                  engine->model_info.vocab_size(), ")")),
          response);
    }
  }
  ReplyJson(metrics_, kEndpoint, Json{{"prompt", tokenizer->DecodeLossy(ids)}}, response);
}

void OpenAiServer::Chat(const httplib::Request& request, httplib::Response& response) {
  const ServingEngine* engine = Admit(request, response, "/v1/chat/completions");
  if (engine == nullptr) return;
  HandleChatCompletions(
      CompletionContext{*engine, metrics_, options_.model_id,
                        absl::StrCat("h", next_request_.fetch_add(1, std::memory_order_relaxed))},
      options_.chat_template ? &*options_.chat_template : nullptr, request, response);
}

void OpenAiServer::Completions(const httplib::Request& request, httplib::Response& response) {
  const ServingEngine* engine = Admit(request, response, "/v1/completions");
  if (engine == nullptr) return;
  HandleCompletions(
      CompletionContext{*engine, metrics_, options_.model_id,
                        absl::StrCat("h", next_request_.fetch_add(1, std::memory_order_relaxed))},
      request, response);
}

}  // namespace sinkserve::server::http
