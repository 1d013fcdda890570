// sinkserve serve: the gRPC server and the OpenAI-compatible HTTP API (docs/api.md). Also what
// `sinkserve` with no command runs.
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cli/command.h"
#include "common/cli/token_file.h"
#include "engine/format/model_directory.h"
#include "server/auth.h"
#include "server/cli/commands.h"
#include "server/cli/model_flags.h"
#include "server/http/openai_server.h"
#include "server/logging.h"
#include "server/server.h"

namespace sinkserve::cli {
namespace {

// INVALID_ARGUMENT unless lo <= value <= hi.
absl::Status InRange(const char* flag, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

// InRange for a flag in seconds (NaN refused), reported in seconds as the flag is written.
absl::Status InRangeSeconds(const char* flag, double seconds, double lo, double hi) {
  if (!(seconds >= lo && seconds <= hi)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s must be in [%g, %.0f] seconds, got %g", flag, lo, hi, seconds));
  }
  return absl::OkStatus();
}

}  // namespace

int RunServe(int argc, char** argv) {
  server::ServerOptions options;
  ModelFlags model_flags;
  CacheFlags cache_flags;
  int64_t port = options.port, metrics_port = options.metrics_port, http_port = 8000;
  std::string served_model_name;
  int64_t max_sessions = 256, max_queue = 64, max_batch = 16, prefill_chunk_tokens = 128;
  int64_t max_prompt_tokens = options.limits.max_prompt_tokens;
  int64_t max_new_tokens = options.limits.max_new_tokens;
  int64_t max_score_tokens = options.limits.max_score_tokens;
  int64_t max_cache_bytes = int64_t{4} << 30;
  double session_ttl_s = 600, grace_period_s = 20, session_store_ttl_s = 0;
  std::string session_persist = "evict";
  int64_t max_message_bytes = options.max_message_bytes;
  std::string auth_token_file, chat_template_file;
  std::string log_level = "info", log_format = "text";

  Flags flags("serve",
              "Serves the model over gRPC (package sinkserve.v1: Generate, Score, sessions,\n"
              "model info; grpc.health.v1; reflection), the OpenAI-compatible HTTP API\n"
              "(--http-port) and Prometheus metrics over HTTP.\n"
              "SIGTERM/SIGINT drains: health NOT_SERVING, new requests refused, in-flight ones\n"
              "finish within --grace-period-s (then they are cancelled), exit 0.");
  model_flags.AddTo(flags);
  flags.Add("host", &options.host, "address to listen on (gRPC and metrics)");
  flags.Add("port", &port, "gRPC port; 0 = any free port");
  flags.Add("http-port", &http_port,
            "OpenAI-compatible HTTP/SSE API port (/v1/completions, /v1/models, /tokenize, "
            "/health, ...); 0 = any free port, -1 = off");
  flags.Add("chat-template", &chat_template_file,
            "the chat template of /v1/chat/completions: a Jinja file, or a JSON file with a "
            "chat_template (as tokenizer_config.json); empty = the model directory's "
            "chat_template.jinja or tokenizer_config.json chat_template, if any");
  flags.Add("served-model-name", &served_model_name,
            "the model id of the HTTP API (/v1/models, requests' \"model\"); empty = the model "
            "directory's name");
  flags.Add("metrics-port", &metrics_port,
            "Prometheus /metrics port; 0 = any free port, -1 = no metrics endpoint");
  flags.Add("server-id", &options.server_id,
            "this replica's name in ModelInfo and every Generate/Score result; "
            "empty = hostname:port");
  cache_flags.AddTo(flags);
  flags.Add("max-sessions", &max_sessions,
            "live sessions at most; a new one evicts the least recently used idle one");
  flags.Add("session-ttl-s", &session_ttl_s, "idle sessions expire after this many seconds");
  flags.Add("session-store", &options.session_store_dir,
            "directory where sessions survive leaving memory (local, or a volume replicas "
            "share): evicted sessions are written there instead of dropped, every idle session "
            "at drain, and any replica restores one on its next request; empty = off");
  flags.Add("session-persist", &session_persist,
            "with --session-store: evict (write on eviction and at drain) or turn (also after "
            "every turn, so that even SIGKILL loses at most the turn in flight)");
  flags.Add("session-store-ttl-s", &session_store_ttl_s,
            "with --session-store: files not written for this many seconds are removed; "
            "0 = --session-ttl-s");
  flags.Add("max-cache-bytes", &max_cache_bytes,
            "KV-cache memory of all sessions and requests; idle sessions are evicted LRU-first "
            "to stay within it; 0 = no limit");
  flags.Add("max-queue", &max_queue,
            "requests waiting beyond the free batch slots; more are refused (RESOURCE_EXHAUSTED)");
  flags.Add("max-batch", &max_batch, "requests running at once (rows of a batched step)");
  flags.Add("prefill-chunk-tokens", &prefill_chunk_tokens,
            "prompt tokens fed per engine step across requests (chunked prefill)");
  flags.Add("max-prompt-tokens", &max_prompt_tokens, "prompt tokens per Generate at most");
  flags.Add("max-new-tokens", &max_new_tokens, "max_new_tokens a Generate may ask for");
  flags.Add("max-score-tokens", &max_score_tokens, "tokens per Score at most");
  flags.Add("grace-period-s", &grace_period_s,
            "on SIGTERM, seconds in-flight requests get to finish before they are cancelled");
  flags.Add("tls-cert", &options.tls_cert_file,
            "PEM certificate chain; with --tls-key the gRPC and HTTP ports speak TLS only "
            "(plaintext clients are refused)");
  flags.Add("tls-key", &options.tls_key_file, "PEM private key of --tls-cert");
  flags.Add("auth-token", &options.auth_token,
            "require 'authorization: Bearer <token>' on every sinkserve.v1 RPC and HTTP API "
            "call (else UNAUTHENTICATED / 401); health, reflection, /health and /ready stay "
            "open for probes. Visible in ps: prefer --auth-token-file");
  flags.Add("auth-token-file", &auth_token_file,
            "read the --auth-token from this file's first line");
  flags.Add("max-message-bytes", &max_message_bytes,
            "largest request message (or HTTP body) accepted; larger ones get "
            "RESOURCE_EXHAUSTED (HTTP 413)");
  flags.Add("log-level", &log_level, "trace, debug, info, warn, error, critical or off");
  flags.Add("log-format", &log_format, "text or json (one JSON object per line)");
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;

  for (absl::Status status : {
           InRange("port", port, 0, 65535),
           InRange("metrics-port", metrics_port, -1, 65535),
           InRange("http-port", http_port, -1, 65535),
           InRange("max-sessions", max_sessions, 1, 1 << 20),
           InRange("max-queue", max_queue, 0, 1 << 20),
           InRange("max-batch", max_batch, 1, 4096),
           InRange("prefill-chunk-tokens", prefill_chunk_tokens, 1, 1 << 16),
           InRange("max-prompt-tokens", max_prompt_tokens, 1, 1 << 28),
           InRange("max-new-tokens", max_new_tokens, 0, 1 << 28),
           InRange("max-score-tokens", max_score_tokens, 2, 1 << 28),
           InRange("max-cache-bytes", max_cache_bytes, 0, std::numeric_limits<int64_t>::max()),
           InRangeSeconds("session-ttl-s", session_ttl_s, 0.001, 1e9),
           InRange("max-message-bytes", max_message_bytes, 1024, std::numeric_limits<int>::max()),
           InRangeSeconds("grace-period-s", grace_period_s, 0, 1e9),
           InRangeSeconds("session-store-ttl-s", session_store_ttl_s, 0, 1e9),
       }) {
    if (!status.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
      return kExitUsage;
    }
  }
  if (session_persist != "evict" && session_persist != "turn") {
    std::fprintf(stderr, "error: --session-persist must be evict or turn, got \"%s\"\n",
                 session_persist.c_str());
    return kExitUsage;
  }
  if (session_persist == "turn" && options.session_store_dir.empty()) {
    std::fprintf(stderr, "error: --session-persist turn needs --session-store DIR\n");
    return kExitUsage;
  }
  options.session_persist_turn = session_persist == "turn";
  options.session_store_ttl =
      std::chrono::milliseconds(static_cast<int64_t>(session_store_ttl_s * 1000));
  absl::StatusOr<CachePolicy> policy = ToPolicy(cache_flags);
  if (!policy.ok()) return Fail(policy.status());
  if (absl::Status status = server::ConfigureLogging(log_level, log_format); !status.ok()) {
    return Fail(status);
  }

  if (!auth_token_file.empty()) {
    if (!options.auth_token.empty()) {
      std::fprintf(stderr, "error: --auth-token and --auth-token-file exclude each other\n");
      return kExitUsage;
    }
    absl::StatusOr<std::string> token = ReadTokenFile(auth_token_file);
    if (!token.ok()) return Fail(token.status());
    options.auth_token = *token;
  }
  options.max_message_bytes = static_cast<int>(max_message_bytes);
  options.port = static_cast<int>(port);
  options.metrics_port = static_cast<int>(metrics_port);
  absl::StatusOr<ModelOptions> model_options = model_flags.ToOptions();
  if (!model_options.ok()) return Fail(model_options.status());
  options.model = *model_options;
  options.scheduler.default_policy = *policy;
  options.scheduler.max_batch = static_cast<int>(max_batch);
  options.scheduler.max_queue = static_cast<int>(max_queue);
  options.scheduler.prefill_chunk_tokens = static_cast<int>(prefill_chunk_tokens);
  options.scheduler.session_limits.max_sessions = static_cast<size_t>(max_sessions);
  options.scheduler.session_limits.ttl =
      std::chrono::milliseconds(static_cast<int64_t>(session_ttl_s * 1000));
  options.scheduler.session_limits.max_cache_bytes = static_cast<uint64_t>(max_cache_bytes);
  options.limits.max_prompt_tokens = static_cast<int>(max_prompt_tokens);
  options.limits.max_new_tokens = static_cast<int>(max_new_tokens);
  options.limits.default_max_new_tokens =
      std::min(options.limits.default_max_new_tokens, options.limits.max_new_tokens);
  options.limits.max_score_tokens = static_cast<int>(max_score_tokens);
  options.grace_period = std::chrono::milliseconds(static_cast<int64_t>(grace_period_s * 1000));
  options.served_model_name = served_model_name;
  if (http_port >= 0) {
    server::http::HttpOptions http;
    http.host = options.host;
    http.port = static_cast<int>(http_port);
    http.tls_cert_file = options.tls_cert_file;
    http.tls_key_file = options.tls_key_file;
    http.auth_token = options.auth_token;
    http.max_body_bytes = static_cast<size_t>(max_message_bytes);
    http.model_id = server::ServedModelName(options);
    // The template is parsed now, so that one outside the subset stops the server at start.
    std::string model_dir;
    if (options.model.path != "demo") {
      absl::StatusOr<ModelDirectory> directory = ResolveModelDirectory(options.model.path);
      if (directory.ok()) model_dir = directory->path;  // else the model load says why
    }
    absl::StatusOr<std::optional<server::http::ChatTemplate>> chat_template =
        server::http::LoadChatTemplate(model_dir, chat_template_file);
    if (!chat_template.ok()) return Fail(chat_template.status());
    http.chat_template = std::move(*chat_template);
    // A thread per connection: every request that can run or wait, and some to refuse more.
    http.threads = static_cast<int>(std::min<int64_t>(max_batch + max_queue + 32, 1024));
    options.make_frontends = [http](server::Metrics& metrics) {
      std::vector<std::unique_ptr<server::Frontend>> frontends;
      frontends.push_back(std::make_unique<server::http::OpenAiServer>(http, &metrics));
      return frontends;
    };
  }
  return server::RunServer(options);
}

}  // namespace sinkserve::cli
