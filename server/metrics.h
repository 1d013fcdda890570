// Prometheus metrics of the server (docs/metrics.md): every `sinkserve_*` series, updated live from
// the scheduler thread (as its SchedulerListener) and the RPC handlers, served by a
// prometheus-cpp exposer on its own port (/metrics).
//
// Histogram buckets are vLLM's where a vLLM metric is analogous, so dashboards carry over, with
// finer edges below for GPU speeds. Every series has a model_name label, as vLLM's do; the
// series of requests (latencies, token counters, finish reasons) also an `api` label, the
// request's GenerateSpec/ScoreSpec::client_api ("grpc" or "openai"). Per-step series (attention,
// batch rows) and gauges have none: one engine step serves both APIs.
// GPU memory gauges read 0 on the CPU backend (their HELP says so) until the CUDA backend
// reports them.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "absl/status/status.h"
#include "engine/serving/scheduler.h"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace sinkserve::server {

// Labels of sinkserve_model_info.
struct ModelLabels {
  std::string model;
  std::string quant;
  std::string backend;
  std::string sink;    // default policy: sink tokens, or "dense"
  std::string window;  // default policy: window tokens, or "dense"
};

class Metrics final : public SchedulerListener {
 public:
  // `model_name` labels every series (vLLM's model_name): the served model's name.
  explicit Metrics(const std::string& model_name);
  ~Metrics() override;

  // Serves /metrics on `bind_address` ("0.0.0.0:9464"; port 0 picks a free one).
  absl::Status Expose(const std::string& bind_address);
  int port() const { return port_; }

  // Once the model is loaded.
  void SetModel(const ModelLabels& labels, uint64_t weights_bytes, uint64_t cache_limit_bytes);
  // One finished request (sinkserve_requests_total{api, rpc, code}): api "grpc" (rpc: the
  // method) or "openai" (rpc: the HTTP endpoint, code: the gRPC code its HTTP status matches).
  void CountRequest(const std::string& api, const std::string& rpc, grpc::StatusCode code);

  // SchedulerListener (scheduler thread).
  void OnForward(StepPhase phase, int rows, int tokens, double attention_seconds) override;
  void OnAdmitted(const std::string& client_api, double queue_seconds) override;
  void OnPromptTokens(const std::string& client_api, int64_t tokens) override;
  void OnFirstToken(const std::string& client_api, double time_to_first_token_seconds) override;
  void OnInterToken(const std::string& client_api, double seconds) override;
  void OnEvictedTokens(const std::string& client_api, int64_t tokens) override;
  void OnGenerateFinished(const std::string& client_api, const GenerateResult& result) override;
  void OnScoreFinished(const std::string& client_api, const ScoreResult& result) override;
  void OnGauges(const SchedulerGauges& gauges) override;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string knock_host_;  // where the exposer listens, to wake it at shutdown
  uint64_t cache_limit_bytes_ = 0;

  // The series of requests from one API (one value of the api label).
  struct ApiSeries {
    prometheus::Histogram* time_to_first_token;
    prometheus::Histogram* time_per_output_token;
    prometheus::Histogram* inter_token_latency;
    prometheus::Histogram* e2e_request_latency;
    prometheus::Histogram* request_queue_time;
    prometheus::Counter* prompt_tokens;
    prometheus::Counter* generation_tokens;
    prometheus::Counter* evicted_tokens;
  };
  // The series of `api`, added on first use (scheduler thread; both APIs are added at start).
  ApiSeries& Series(const std::string& api);

  prometheus::Family<prometheus::Histogram>* time_to_first_token_;
  prometheus::Family<prometheus::Histogram>* time_per_output_token_;
  prometheus::Family<prometheus::Histogram>* inter_token_latency_;
  prometheus::Family<prometheus::Histogram>* e2e_request_latency_;
  prometheus::Family<prometheus::Histogram>* request_queue_time_;
  prometheus::Family<prometheus::Counter>* prompt_tokens_;
  prometheus::Family<prometheus::Counter>* generation_tokens_;
  prometheus::Family<prometheus::Counter>* evicted_tokens_;
  std::unordered_map<std::string, ApiSeries> series_;
  prometheus::Histogram* attention_prefill_;
  prometheus::Histogram* attention_decode_;
  prometheus::Histogram* batch_rows_;
  prometheus::Gauge* gpu_memory_used_;
  prometheus::Gauge* gpu_memory_peak_;
  prometheus::Gauge* gpu_memory_total_;
  prometheus::Gauge* weights_bytes_;
  prometheus::Gauge* kv_cache_active_bytes_;
  prometheus::Gauge* kv_cache_pooled_bytes_;
  prometheus::Gauge* kv_cache_usage_;
  prometheus::Gauge* requests_running_;
  prometheus::Gauge* requests_waiting_;
  prometheus::Gauge* sessions_active_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* request_success_;
  prometheus::Family<prometheus::Gauge>* model_info_;
};

}  // namespace sinkserve::server
