// OpenAiServer: the OpenAI-compatible HTTP/SSE API beside gRPC (`sinkserve serve --http-port`),
// on cpp-httplib (NOTES.md, "HTTP API"). It calls the same scheduler, validator, limits and
// metrics as the gRPC service:
//   POST /v1/completions   completions.h (JSON, or server-sent events with stream: true)
//   POST /v1/chat/completions  chat_completions.h, with the model's chat template (400 without)
//   GET  /v1/models        the served model
//   GET  /health, /ready   200 while SERVING; 503 while loading or draining
//   POST /tokenize, /detokenize  as vLLM shapes them
// With a bearer token, every path but /health and /ready needs `Authorization: Bearer <token>`
// (401 otherwise); a body over the size limit is 413; errors are OpenAI's JSON shape
// (openai_errors.h). TLS (cert + key files) covers the port when given.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/auth.h"
#include "server/http/chat_template.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/service.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace sinkserve::server::http {

struct HttpOptions {
  std::string host = "0.0.0.0";
  int port = 8000;            // 0 picks a free port
  std::string tls_cert_file;  // PEM; with tls_key_file: HTTPS only
  std::string tls_key_file;
  std::string auth_token;  // "" = no authentication
  size_t max_body_bytes = 4 << 20;
  std::string model_id;                       // the id /v1/models lists and requests may name
  int threads = 64;                           // connections served at once (one thread each)
  std::optional<ChatTemplate> chat_template;  // none: /v1/chat/completions answers 400
};

class OpenAiServer final : public Frontend {
 public:
  OpenAiServer(HttpOptions options, Metrics* metrics);
  ~OpenAiServer() override;  // Stop()

  // Binds the port and starts serving (503 until SetEngine).
  absl::Status Start() override;
  // From now on requests reach `engine` (which outlives this server).
  void SetEngine(const ServingEngine* engine) override;
  // /ready answers 503 from now on (the scheduler refuses new work itself).
  void SetDraining() override { draining_ = true; }
  // Closes the port and joins the connection threads (streams end when the scheduler has
  // stopped their requests).
  void Stop() override;

  int port() const { return port_; }
  bool tls() const { return !options_.tls_cert_file.empty(); }

 private:
  // The engine for a request that may proceed; else answers the error and returns nullptr.
  const ServingEngine* Admit(const httplib::Request& request, httplib::Response& response,
                             const char* endpoint) const;
  void Models(const httplib::Request& request, httplib::Response& response);
  void Ready(httplib::Response& response) const;
  void Tokenize(const httplib::Request& request, httplib::Response& response);
  void Detokenize(const httplib::Request& request, httplib::Response& response);
  void Chat(const httplib::Request& request, httplib::Response& response);
  void Completions(const httplib::Request& request, httplib::Response& response);

  HttpOptions options_;
  Metrics* metrics_;
  BearerToken token_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<const ServingEngine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_request_{1};
};

// Answers `status` (not OK) as an OpenAI error with `http_status` (default: the one matching
// its code), with Retry-After on 429, and counts it.
void ReplyError(Metrics* metrics, const char* endpoint, const absl::Status& status,
                httplib::Response& response, int http_status = 0);

}  // namespace sinkserve::server::http
