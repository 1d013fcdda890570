// The load generator's OpenAI-compatible transport (`sinkserve-bench load --api openai --url
// http://host:port`): streaming POST /v1/completions with libcurl, one thread per request,
// timed like the gRPC GenerateCall, so the same load shapes and report measure sinkserve,
// llama-server, vLLM or any server of that API side by side.
//
// Tokens are counted from the server's `usage` (stream_options.include_usage) when it sends
// one, else one per chunk carrying text; TTFT is the first chunk with text, ITL the gaps
// between such chunks. HTTP errors map to the gRPC code they correspond to (429 →
// RESOURCE_EXHAUSTED, 503 → UNAVAILABLE, ...), so the report's error table reads the same.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "client/load_generator.h"

namespace sinkserve::bench {

class OpenAiClient {
 public:
  // Asks GET {url}/v1/models for the model to name (the first listed when `model` is empty),
  // retrying a server that does not answer yet until `wait` has passed. The bearer token comes
  // from the environment variable OPENAI_API_KEY when set.
  static absl::StatusOr<std::unique_ptr<OpenAiClient>> Connect(
      const std::string& url, const std::string& model,
      std::chrono::milliseconds wait = std::chrono::seconds(5));
  ~OpenAiClient();  // joins the request threads

  const std::string& model() const { return model_; }
  const std::string& url() const { return url_; }

  // Sends `request` (prompt ids, max_new_tokens, sampling, ignore_eos; session_id and
  // keep_session as sinkserve's extension fields) as one streaming completion on a new thread.
  // `done` gets the record, completed, and the session id the server answered (if any).
  using Done = std::function<void(RequestRecord record, std::string session_id)>;
  void Start(const v1::GenerateRequest& request, double timeout_s, RequestRecord record,
             Done done);

 private:
  OpenAiClient(std::string url, std::string model, std::string api_key)
      : url_(std::move(url)), model_(std::move(model)), api_key_(std::move(api_key)) {}
  void Run(const std::string& body, double timeout_s, RequestRecord record, const Done& done) const;

  std::string url_;
  std::string model_;
  std::string api_key_;
  std::mutex threads_mutex_;
  std::vector<std::thread> threads_;
};

}  // namespace sinkserve::bench
