#include "client/openai_client.h"

#include <curl/curl.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace sinkserve::bench {
namespace {

// Runs the transfer, then frees the handle and its header list: the curl code and the HTTP
// status (0 when no response came).
std::pair<CURLcode, long> PerformAndRelease(CURL* curl, curl_slist* headers) {
  const CURLcode code = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return {code, status};
}

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Milliseconds(Clock::duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

grpc::StatusCode CodeOfHttpStatus(long status) {
  switch (status) {
    case 400:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 401:
      return grpc::StatusCode::UNAUTHENTICATED;
    case 403:
      return grpc::StatusCode::PERMISSION_DENIED;
    case 404:
      return grpc::StatusCode::NOT_FOUND;
    case 409:
      return grpc::StatusCode::ABORTED;
    case 413:
    case 429:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case 499:
      return grpc::StatusCode::CANCELLED;
    case 503:
      return grpc::StatusCode::UNAVAILABLE;
    case 504:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    default:
      return status >= 500 ? grpc::StatusCode::INTERNAL : grpc::StatusCode::UNKNOWN;
  }
}

// curl's global state, set up once before any thread uses it.
void InitCurl() {
  static const bool initialized = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  (void)initialized;
}

// The parts of one streamed response: the SSE parser and the request's timings.
struct Stream {
  Stream(RequestRecord* record, Clock::time_point sent) : record(record), sent(sent) {}
  RequestRecord* record;
  Clock::time_point sent;
  Clock::time_point first_token, last_token;
  std::string pending;  // bytes not yet split into events
  std::string body;     // a non-SSE (error) body
  std::string session_id;
  int chunks_with_text = 0;
  int64_t usage_tokens = -1;
  std::string error;  // an `error` event

  void Event(const std::string& data) {
    if (data == "[DONE]") return;
    const Json json = Json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) {
      error = "a stream event that is not JSON";
      return;
    }
    if (json.contains("error")) {
      error = json["error"].value("message", json["error"].dump());
      return;
    }
    if (json.contains("session_id") && json["session_id"].is_string()) {
      session_id = json["session_id"].get<std::string>();
    }
    if (json.contains("usage") && json["usage"].is_object()) {
      usage_tokens = json["usage"].value("completion_tokens", int64_t{-1});
    }
    if (!json.contains("choices") || !json["choices"].is_array()) return;
    for (const Json& choice : json["choices"]) {
      if (choice.value("text", std::string()).empty()) continue;
      const Clock::time_point now = Clock::now();
      if (chunks_with_text == 0) {
        first_token = now;
        record->ttft_ms = Milliseconds(now - sent);
      } else {
        record->itl_ms.push_back(Milliseconds(now - last_token));
      }
      last_token = now;
      ++chunks_with_text;
    }
  }

  void Bytes(const char* data, size_t size) {
    pending.append(data, size);
    size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) == 0) {
        Event(event.substr(6));
      } else if (event.rfind("data:", 0) == 0) {
        Event(event.substr(5));
      } else {
        body += event;
      }
    }
  }
};

size_t OnBytes(char* data, size_t size, size_t count, void* stream) {
  static_cast<Stream*>(stream)->Bytes(data, size * count);
  return size * count;
}

size_t Collect(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// GET {url}/v1/models: the body, or why not.
absl::StatusOr<std::string> GetModels(const std::string& url, const std::string& api_key) {
  CURL* curl = curl_easy_init();
  std::string body;
  curl_slist* headers = nullptr;
  if (!api_key.empty()) {
    headers = curl_slist_append(headers, absl::StrCat("Authorization: Bearer ", api_key).c_str());
  }
  const std::string models = absl::StrCat(url, "/v1/models");
  curl_easy_setopt(curl, CURLOPT_URL, models.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  const auto [code, status] = PerformAndRelease(curl, headers);
  if (code != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(models, ": ", curl_easy_strerror(code)));
  }
  if (status != 200) {
    return absl::Status(static_cast<absl::StatusCode>(CodeOfHttpStatus(status)),
                        absl::StrCat(models, ": HTTP ", status, " ", body));
  }
  return body;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiClient>> OpenAiClient::Connect(
    const std::string& url, const std::string& model, std::chrono::milliseconds wait) {
  InitCurl();
  std::string base = url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  const char* key = std::getenv("OPENAI_API_KEY");
  const std::string api_key = key != nullptr ? key : "";
  const Clock::time_point deadline = Clock::now() + wait;
  absl::StatusOr<std::string> models = GetModels(base, api_key);
  while (!models.ok() && models.status().code() == absl::StatusCode::kUnavailable &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    models = GetModels(base, api_key);
  }
  if (!models.ok()) return models.status();
  std::string id = model;
  if (id.empty()) {
    const Json json = Json::parse(*models, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.contains("data") || !json["data"].is_array() ||
        json["data"].empty() || !json["data"][0].contains("id")) {
      return absl::InvalidArgumentError(
          absl::StrCat(base, "/v1/models lists no model; name one with --model"));
    }
    id = json["data"][0]["id"].get<std::string>();
  }
  return std::unique_ptr<OpenAiClient>(new OpenAiClient(base, id, api_key));
}

OpenAiClient::~OpenAiClient() {
  std::lock_guard lock(threads_mutex_);
  for (std::thread& thread : threads_) thread.join();
}

void OpenAiClient::Start(const v1::GenerateRequest& request, double timeout_s, RequestRecord record,
                         Done done) {
  Json body = {{"model", model_},
               {"prompt", Json(std::vector<uint32_t>(request.prompt_token_ids().begin(),
                                                     request.prompt_token_ids().end()))},
               {"max_tokens", request.max_new_tokens()},
               {"temperature", request.sampling().temperature()},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  // OpenAI's seed is a signed 64-bit integer.
  if (request.sampling().has_seed()) body["seed"] = request.sampling().seed() >> 1;
  if (request.ignore_eos()) body["ignore_eos"] = true;  // vLLM's and sinkserve's extension
  if (!request.session_id().empty()) body["session_id"] = request.session_id();
  if (request.keep_session()) body["keep_session"] = true;
  std::lock_guard lock(threads_mutex_);
  threads_.emplace_back(
      [this, text = body.dump(), timeout_s, record = std::move(record),
       done = std::move(done)]() mutable { Run(text, timeout_s, std::move(record), done); });
}

void OpenAiClient::Run(const std::string& body, double timeout_s, RequestRecord record,
                       const Done& done) const {
  Stream stream(&record, Clock::now());
  CURL* curl = curl_easy_init();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (!api_key_.empty()) {
    headers = curl_slist_append(headers, absl::StrCat("Authorization: Bearer ", api_key_).c_str());
  }
  const std::string endpoint = absl::StrCat(url_, "/v1/completions");
  curl_easy_setopt(curl, CURLOPT_URL, endpoint.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBytes);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &stream);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_s * 1000));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  const auto [code, status] = PerformAndRelease(curl, headers);

  record.e2e_ms = Milliseconds(Clock::now() - stream.sent);
  record.output_tokens =
      stream.usage_tokens >= 0 ? static_cast<int>(stream.usage_tokens) : stream.chunks_with_text;
  if (stream.chunks_with_text > 1 && record.output_tokens > 1) {
    record.tpot_ms =
        Milliseconds(stream.last_token - stream.first_token) / (record.output_tokens - 1);
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    record.code = grpc::StatusCode::DEADLINE_EXCEEDED;
    record.error = "the request timed out (--request-timeout-s)";
  } else if (code != CURLE_OK) {
    record.code = grpc::StatusCode::UNAVAILABLE;
    record.error = absl::StrCat(endpoint, ": ", curl_easy_strerror(code));
  } else if (status != 200) {
    record.code = CodeOfHttpStatus(status);
    const Json error = Json::parse(stream.body + stream.pending, nullptr, false);
    record.error = !error.is_discarded() && error.contains("error") && error["error"].is_object()
                       ? error["error"].value("message", std::string())
                       : absl::StrCat("HTTP ", status);
  } else if (!stream.error.empty()) {
    record.code = grpc::StatusCode::INTERNAL;
    record.error = stream.error;
  }
  done(std::move(record), std::move(stream.session_id));
}

}  // namespace sinkserve::bench
