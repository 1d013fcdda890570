// Server: the sinkserve gRPC server assembled — model, scheduler, validation, the Sinkserve
// service, grpc.health.v1, server reflection and the Prometheus exposer — and its lifecycle:
//
//   Start(): gRPC and /metrics come up first with health NOT_SERVING (RPCs answer
//            UNAVAILABLE "loading"), then the model loads and health turns SERVING.
//   Drain(): health NOT_SERVING and new Generate/Score/CreateSession refused (UNAVAILABLE);
//            in-flight requests get `grace` to finish, the rest are cancelled; then gRPC shuts
//            down (idle connections do not hold it).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model.h"
#include "engine/serving/scheduler.h"
#include "engine/serving/session_store.h"
#include "server/metrics.h"
#include "server/service.h"
#include "server/session_store_metrics.h"
#include "server/validation.h"

namespace sinkserve::server {

// Another API on the same engine beside gRPC (the OpenAI-compatible HTTP server, server/http/):
// started before the model loads, handed the engine once it is loaded, told when draining
// starts, and stopped once the scheduler has ended every request.
class Frontend {
 public:
  virtual ~Frontend() = default;
  virtual absl::Status Start() = 0;
  virtual void SetEngine(const ServingEngine* engine) = 0;
  virtual void SetDraining() = 0;
  virtual void Stop() = 0;
};

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 50051;          // 0 picks a free port (port() tells which)
  int metrics_port = 9464;   // 0 picks a free port; -1 = no metrics endpoint
  ModelOptions model;
  std::string served_model_name;  // --served-model-name; "" = ServedModelName's default
  SchedulerOptions scheduler;
  RequestLimits limits;
  std::chrono::milliseconds grace_period{30'000};
  // This replica's name in ModelInfo and every Generate/Score result, so that clients behind a
  // load balancer see which replica answered; empty = hostname:port.
  std::string server_id;
  // Security (`sinkserve serve --tls-cert/--tls-key/--auth-token/--max-message-bytes`).
  std::string tls_cert_file;  // PEM certificate chain; with tls_key_file: TLS only, no plaintext
  std::string tls_key_file;   // PEM private key
  std::string auth_token;     // "" = no authentication; else `authorization: Bearer <token>`
  int max_message_bytes = 4 << 20;  // largest request message the server accepts
  // Makes the frontends that serve beside gRPC (they count into the server's metrics).
  std::function<std::vector<std::unique_ptr<Frontend>>(Metrics&)> make_frontends;
  // Session store (`--session-store DIR`, `--session-persist`, `--session-store-ttl-s`): "" =
  // sessions live in memory only.
  std::string session_store_dir;
  bool session_persist_turn = false;
  std::chrono::milliseconds session_store_ttl{0};  // 0 = the session TTL
};

// The name the server serves its model under (the model_name label of every metric, the
// OpenAI API's model id): --served-model-name, else the model directory's name, or "demo" for
// the built-in model.
std::string ServedModelName(const ServerOptions& options);

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // Drain(0) if still serving

  // Binds the ports and loads the model. Errors: a port in use, an unreadable TLS file, a model
  // that does not load.
  absl::Status Start();
  // Drains and shuts down (idempotent). Returns true when every in-flight request finished
  // within the grace period (false: some were cancelled).
  bool Drain(std::chrono::milliseconds grace);

  int port() const { return port_; }
  const std::string& server_id() const { return server_id_; }
  int metrics_port() const { return metrics_.port(); }
  const ServerOptions& options() const { return options_; }
  Scheduler* scheduler() { return scheduler_.get(); }
  Metrics& metrics() { return metrics_; }

 private:
  absl::Status LoadModel();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials() const;
  v1::ModelInfo MakeModelInfo() const;

  ServerOptions options_;
  Metrics metrics_;
  SinkserveService service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;
  std::string server_id_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PersistentSessionStore> session_store_;
  std::unique_ptr<SessionStoreMetrics> session_store_metrics_;
  std::unique_ptr<RequestValidator> validator_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<Frontend>> frontends_;
  bool drained_ = false;
};

// `sinkserve serve`: runs `options` until SIGTERM or SIGINT, then drains within the grace
// period (a second signal cancels at once). Returns the process exit code (0 after a drain).
int RunServer(const ServerOptions& options);

}  // namespace sinkserve::server
