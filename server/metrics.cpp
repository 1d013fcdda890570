#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/status.h"

namespace sinkserve::server {
namespace {

// vLLM's buckets (vllm/v1/metrics/loggers.py), every edge kept for comparability, with finer
// edges below where a GPU's figures fall (H100: TPOT ~4.6 ms, a 2.2 ms target): otherwise every
// observation lands in the first bucket and a quantile reads as its edge.
const prometheus::Histogram::BucketBoundaries kTimeToFirstTokenBuckets = {
    0.001, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06,  0.08,  0.1,   0.25,
    0.5,   0.75,  1.0,    2.5,  5.0,   7.5,  10.0,  20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const prometheus::Histogram::BucketBoundaries kPerTokenBuckets = {
    0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
    0.2,   0.3,    0.4,   0.5,    0.75,  1.0,   2.5,   5.0,    7.5,  10.0,  20.0, 40.0,  80.0};
const prometheus::Histogram::BucketBoundaries kRequestLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
// vLLM's request-latency buckets (its queue-time histogram's), from 1 ms: a request admitted
// into a free batch slot waits about one engine step.
const prometheus::Histogram::BucketBoundaries kQueueTimeBuckets = {
    0.001, 0.0025, 0.005, 0.01,  0.025, 0.05,  0.1,   0.2,    0.3,   0.5,
    0.8,   1.0,    1.5,   2.0,   2.5,   5.0,   10.0,  15.0,   20.0,  30.0,
    40.0,  50.0,   60.0,  120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
// Attention per forward step has no vLLM analogue: 10 µs to 2.5 s.
const prometheus::Histogram::BucketBoundaries kAttentionBuckets = {
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025,  0.05, 0.1,  0.25,   0.5,  1.0,  2.5};
const prometheus::Histogram::BucketBoundaries kBatchRowsBuckets = {1,  2,  4,   8,  16,
                                                                   32, 64, 128, 256};

// The exposer (civetweb) gives each connection a worker thread until its request is read and
// answered. Idle or slow-header connections each hold one for at most the request timeout, so
// that many of them (a port scan, a stalled client) cannot keep Prometheus from scraping: a
// scrape finds a free worker while fewer than kExposerThreads connections are open, and waits at
// most about one timeout per kExposerThreads connections beyond that. A scrape's request is one
// small packet; two seconds covers a lossy network's retransmits.
constexpr int kExposerThreads = 128;
constexpr int kExposerRequestTimeoutMs = 2000;

constexpr const char* kFinishReasons[] = {"stop", "length", "cancelled", "error"};
constexpr const char* kApis[] = {"grpc", "openai"};  // the servers' client_api labels

// A family of `sinkserve_*` series; every one carries the model_name label.
template <typename Builder>
auto& Family(Builder builder, prometheus::Registry& registry, const std::string& model_name,
             const std::string& name, const std::string& help) {
  return builder.Name(name).Help(help).Labels({{"model_name", model_name}}).Register(registry);
}

}  // namespace

Metrics::Metrics(const std::string& model_name)
    : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  const auto Histogram = [&](const std::string& name, const std::string& help,
                             const prometheus::Histogram::BucketBoundaries& buckets) {
    return &Family(prometheus::BuildHistogram(), r, model_name, name, help).Add({}, buckets);
  };
  const auto Gauge = [&](const std::string& name, const std::string& help) {
    return &Family(prometheus::BuildGauge(), r, model_name, name, help).Add({});
  };
  // Families of request series, labelled by api (Series adds them).
  const auto ApiHistograms = [&](const std::string& name, const std::string& help) {
    return &Family(prometheus::BuildHistogram(), r, model_name, name, help);
  };
  const auto ApiCounters = [&](const std::string& name, const std::string& help) {
    return &Family(prometheus::BuildCounter(), r, model_name, name, help);
  };
  time_to_first_token_ =
      ApiHistograms("sinkserve_time_to_first_token_seconds",
                    "Generate: arrival to first generated token (queue and prefill included)");
  time_per_output_token_ = ApiHistograms(
      "sinkserve_time_per_output_token_seconds",
      "Generate: (last token - first token) / (generated tokens - 1), per request with 2+ tokens");
  inter_token_latency_ = ApiHistograms("sinkserve_inter_token_latency_seconds",
                                       "Time between consecutive generated tokens of a request");
  e2e_request_latency_ =
      ApiHistograms("sinkserve_e2e_request_latency_seconds",
                    "Generate and Score: arrival to the last response (requests that ran)");
  request_queue_time_ = ApiHistograms("sinkserve_request_queue_time_seconds",
                                      "Generate and Score: arrival to the first engine step");
  prompt_tokens_ =
      ApiCounters("sinkserve_prompt_tokens_total",
                  "Prompt tokens fed through the model (Generate prompts, Score texts)");
  generation_tokens_ = ApiCounters("sinkserve_generation_tokens_total", "Generated tokens");
  evicted_tokens_ =
      ApiCounters("sinkserve_evicted_tokens_total", "Tokens evicted from streaming KV caches");
  auto& attention =
      Family(prometheus::BuildHistogram(), r, model_name, "sinkserve_attention_seconds",
             "Measured attention time of one forward step (all layers), "
             "Backend::last_step_attention_seconds; phase=prefill for a prompt "
             "chunk, decode for a batched step");
  attention_prefill_ = &attention.Add({{"phase", "prefill"}}, kAttentionBuckets);
  attention_decode_ = &attention.Add({{"phase", "decode"}}, kAttentionBuckets);
  batch_rows_ = Histogram("sinkserve_batch_rows",
                          "Rows (sessions) per batched forward step: continuous batching at work",
                          kBatchRowsBuckets);
  const std::string no_gpu = " (0 on the CPU backend: no GPU memory is used)";
  gpu_memory_used_ = Gauge(
      "sinkserve_gpu_memory_used_bytes",
      "GPU memory held by sinkserve: weights, KV caches, activations, pooled blocks" + no_gpu);
  gpu_memory_peak_ =
      Gauge("sinkserve_gpu_memory_peak_bytes", "The most GPU memory sinkserve has held" + no_gpu);
  gpu_memory_total_ = Gauge("sinkserve_gpu_memory_total_bytes", "GPU memory size" + no_gpu);
  weights_bytes_ = Gauge("sinkserve_weights_bytes", "Bytes of the model's weights as served");
  auto& kv_cache_bytes = Family(prometheus::BuildGauge(), r, model_name, "sinkserve_kv_cache_bytes",
                                "KV-cache memory the process holds: state=active for live "
                                "sessions and running requests, state=pooled for caches of "
                                "ended streams kept for reuse (freed when a new cache needs "
                                "the room)");
  kv_cache_active_bytes_ = &kv_cache_bytes.Add({{"state", "active"}});
  kv_cache_pooled_bytes_ = &kv_cache_bytes.Add({{"state", "pooled"}});
  kv_cache_usage_ = Gauge(
      "sinkserve_kv_cache_usage_ratio",
      "kv_cache_bytes{state=\"active\"} / the cache memory limit (--max-cache-bytes); 0 without "
      "a limit");
  requests_running_ =
      Gauge("sinkserve_num_requests_running", "Generate/Score requests in the running batch");
  requests_waiting_ =
      Gauge("sinkserve_num_requests_waiting", "Generate/Score requests queued for a batch slot");
  sessions_active_ = Gauge("sinkserve_sessions_active", "Live sessions (named streams)");
  requests_ = &Family(prometheus::BuildCounter(), r, model_name, "sinkserve_requests_total",
                      "Finished requests by API (grpc, openai), method or endpoint, and gRPC "
                      "status code");
  requests_->Add({{"api", "grpc"}, {"rpc", "Generate"}, {"code", "OK"}});
  request_success_ =
      &Family(prometheus::BuildCounter(), r, model_name, "sinkserve_request_success_total",
              "Generate requests that ran, by API and finish reason");
  // Both APIs' series exist (at 0) from the start, so that rates and ratios need no absent().
  for (const char* api : kApis) {
    Series(api);
    for (const char* reason : kFinishReasons) {
      request_success_->Add({{"api", api}, {"finish_reason", reason}});
    }
  }
  model_info_ = &Family(prometheus::BuildGauge(), r, model_name, "sinkserve_model_info",
                        "The served model (value 1): model, quantization, backend, default "
                        "cache policy");
}

Metrics::~Metrics() {
  if (!exposer_) return;
  // civetweb's accept loop polls with a 2-second timeout before it sees the stop flag; a
  // connection wakes it, so stopping takes milliseconds instead of up to 2 s.
  std::atomic<bool> stopped{false};
  std::thread knocker([&] {
    while (!stopped.load()) {
      const int fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<uint16_t>(port_));
      if (inet_pton(AF_INET, knock_host_.c_str(), &address.sin_addr) != 1) {
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      }
      (void)connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
      close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  exposer_.reset();
  stopped = true;
  knocker.join();
}

absl::Status Metrics::Expose(const std::string& bind_address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", bind_address, "num_threads", std::to_string(kExposerThreads),
        "request_timeout_ms", std::to_string(kExposerRequestTimeoutMs), "enable_keep_alive", "no"});
  } catch (const std::exception& error) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", bind_address, ": ",
                                               error.what(),
                                               " (is the port in use? see --metrics-port)"));
  }
  exposer_->RegisterCollectable(registry_);
  const std::string host = bind_address.substr(0, bind_address.rfind(':'));
  knock_host_ = host == "0.0.0.0" || host.empty() ? "127.0.0.1" : host;
  const std::vector<int> ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? 0 : ports.front();
  return absl::OkStatus();
}

void Metrics::SetModel(const ModelLabels& labels, uint64_t weights_bytes,
                       uint64_t cache_limit_bytes) {
  model_info_
      ->Add({{"model", labels.model},
             {"quant", labels.quant},
             {"backend", labels.backend},
             {"sink", labels.sink},
             {"window", labels.window}})
      .Set(1);
  weights_bytes_->Set(static_cast<double>(weights_bytes));
  cache_limit_bytes_ = cache_limit_bytes;
}

void Metrics::CountRequest(const std::string& api, const std::string& rpc, grpc::StatusCode code) {
  requests_->Add({{"api", api}, {"rpc", rpc}, {"code", StatusCodeName(code)}}).Increment();
}

void Metrics::OnForward(StepPhase phase, int rows, int tokens, double attention_seconds) {
  (phase == StepPhase::kStepPhasePrefill ? attention_prefill_ : attention_decode_)
      ->Observe(attention_seconds);
  // A batched step has one token per row; a prompt chunk is one row of many tokens.
  if (tokens == rows) batch_rows_->Observe(rows);
}

Metrics::ApiSeries& Metrics::Series(const std::string& api) {
  if (auto it = series_.find(api); it != series_.end()) return it->second;
  const prometheus::Labels labels = {{"api", api}};
  ApiSeries series{&time_to_first_token_->Add(labels, kTimeToFirstTokenBuckets),
                   &time_per_output_token_->Add(labels, kPerTokenBuckets),
                   &inter_token_latency_->Add(labels, kPerTokenBuckets),
                   &e2e_request_latency_->Add(labels, kRequestLatencyBuckets),
                   &request_queue_time_->Add(labels, kQueueTimeBuckets),
                   &prompt_tokens_->Add(labels),
                   &generation_tokens_->Add(labels),
                   &evicted_tokens_->Add(labels)};
  return series_.emplace(api, series).first->second;
}

void Metrics::OnAdmitted(const std::string& client_api, double queue_seconds) {
  Series(client_api).request_queue_time->Observe(queue_seconds);
}

void Metrics::OnPromptTokens(const std::string& client_api, int64_t tokens) {
  Series(client_api).prompt_tokens->Increment(static_cast<double>(tokens));
}

void Metrics::OnFirstToken(const std::string& client_api, double time_to_first_token_seconds) {
  ApiSeries& series = Series(client_api);
  series.time_to_first_token->Observe(time_to_first_token_seconds);
  series.generation_tokens->Increment();
}

void Metrics::OnInterToken(const std::string& client_api, double seconds) {
  ApiSeries& series = Series(client_api);
  series.inter_token_latency->Observe(seconds);
  series.generation_tokens->Increment();
}

void Metrics::OnEvictedTokens(const std::string& client_api, int64_t tokens) {
  if (tokens > 0) Series(client_api).evicted_tokens->Increment(static_cast<double>(tokens));
}

void Metrics::OnGenerateFinished(const std::string& client_api, const GenerateResult& result) {
  request_success_
      ->Add({{"api", client_api}, {"finish_reason", FinishReasonName(result.finish_reason)}})
      .Increment();
  ApiSeries& series = Series(client_api);
  series.e2e_request_latency->Observe(result.timings.e2e_seconds);
  if (result.generated_tokens > 1) {
    series.time_per_output_token->Observe(result.timings.time_per_output_token_seconds);
  }
}

void Metrics::OnScoreFinished(const std::string& client_api, const ScoreResult& result) {
  Series(client_api).e2e_request_latency->Observe(result.timings.e2e_seconds);
}

void Metrics::OnGauges(const SchedulerGauges& gauges) {
  gpu_memory_used_->Set(static_cast<double>(gauges.device_memory.used_bytes));
  gpu_memory_peak_->Set(static_cast<double>(gauges.device_memory.peak_bytes));
  gpu_memory_total_->Set(static_cast<double>(gauges.device_memory.total_bytes));
  requests_running_->Set(gauges.running);
  requests_waiting_->Set(gauges.waiting);
  sessions_active_->Set(gauges.sessions);
  kv_cache_active_bytes_->Set(static_cast<double>(gauges.cache_bytes));
  kv_cache_pooled_bytes_->Set(static_cast<double>(gauges.pooled_cache_bytes));
  kv_cache_usage_->Set(cache_limit_bytes_ > 0 ? static_cast<double>(gauges.cache_bytes) /
                                                    static_cast<double>(cache_limit_bytes_)
                                              : 0.0);
}

}  // namespace sinkserve::server
