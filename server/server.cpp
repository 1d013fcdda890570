#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "grpc/health/v1/health.pb.h"
#include "engine/serving/directory_session_store.h"
#include "server/convert.h"
#include "server/logging.h"

namespace sinkserve::server {
namespace {

constexpr char kServiceName[] = "sinkserve.v1.Sinkserve";
// How long gRPC gets, once the scheduler has stopped, before it cancels what is left.
constexpr std::chrono::milliseconds kShutdownAfterDrain{500};

std::string HostName() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0' ? name : "localhost";
}

// The contents of a PEM file named by a flag; errors name the flag and the file.
absl::StatusOr<std::string> ReadPemFile(const char* flag, const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok() || contents->find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, ": cannot read a PEM file there"));
  }
  return contents;
}

}  // namespace

std::string ServedModelName(const ServerOptions& options) {
  if (!options.served_model_name.empty()) return options.served_model_name;
  const std::string& path = options.model.path;
  if (path.empty() || path == "demo") return "demo";
  std::filesystem::path dir = std::filesystem::absolute(path).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "models/pythia-160m/"
  return dir.filename().string();
}

Server::Server(ServerOptions options)
    : options_(std::move(options)),
      metrics_(ServedModelName(options_)),
      service_(&metrics_, BearerToken(options_.auth_token)) {}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Server::Credentials() const {
  if (options_.tls_cert_file.empty() != options_.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (options_.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = ReadPemFile("tls-cert", options_.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile("tls-key", options_.tls_key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

Server::~Server() { Drain(std::chrono::milliseconds(0)); }

absl::Status Server::Start() {
  if (options_.metrics_port >= 0) {
    if (absl::Status status =
            metrics_.Expose(absl::StrCat(options_.host, ":", options_.metrics_port));
        !status.ok()) {
      return status;
    }
  }
  // grpc.health.v1 (gRPC's own implementation) and reflection; the health descriptor is linked
  // in so that reflection can describe it too.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials();
  if (!credentials.ok()) return credentials.status();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(options_.host, ":", options_.port);
  builder.AddListeningPort(address, *credentials, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.RegisterService(&service_);
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || port_ == 0) {
    grpc_server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address,
                                               " (is the port in use? see --host/--port)"));
  }
  server_id_ = options_.server_id.empty() ? absl::StrCat(HostName(), ":", port_)
                                          : options_.server_id;
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  Log(spdlog::level::info, "listening",
      {{"grpc", absl::StrCat(options_.host, ":", port_)}, {"server_id", server_id_},
       {"metrics", options_.metrics_port >= 0
                       ? absl::StrCat("http://", options_.host, ":", metrics_.port(), "/metrics")
                       : std::string("off")},
       {"tls", options_.tls_cert_file.empty() ? "off" : "on (plaintext refused)"},
       {"auth", options_.auth_token.empty() ? "off" : "bearer token"},
       {"health", "NOT_SERVING until the model is loaded"}});
  if (options_.make_frontends) frontends_ = options_.make_frontends(metrics_);
  for (const std::unique_ptr<Frontend>& frontend : frontends_) {
    if (absl::Status status = frontend->Start(); !status.ok()) return status;
  }
  if (absl::Status status = LoadModel(); !status.ok()) return status;
  health->SetServingStatus(true);
  health->SetServingStatus(kServiceName, true);
  Log(spdlog::level::info, "serving", {{"health", "SERVING"}});
  return absl::OkStatus();
}

absl::Status Server::LoadModel() {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(options_.model);
  if (!model.ok()) return model.status();
  model_ = std::move(*model);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Log(spdlog::level::info, "model loaded",
      {{"model", model_->name()}, {"shape", model_->config().Describe()},
       {"parameters", model_->config().ParameterCount()}, {"weights_bytes", model_->weights_bytes()},
       {"backend", model_->backend().name()},
       {"default_cache", options_.scheduler.default_policy.Describe()}, {"load_s", seconds}});
  if (model_->is_demo()) {
    Log(spdlog::level::warn,
        "this is the built-in DEMO model with RANDOM weights: its text is noise; pass --model DIR "
        "for a real checkpoint");
  }
  const CachePolicy& policy = options_.scheduler.default_policy;
  const bool dense = policy.kind == CachePolicy::Kind::kCachePolicyDense;
  metrics_.SetModel(ModelLabels{model_->name(), model_->weights_format(), model_->backend().name(),
                                dense ? "dense" : std::to_string(policy.sink_tokens),
                                dense ? "dense" : std::to_string(policy.window_tokens)},
                    model_->weights_bytes(), options_.scheduler.session_limits.max_cache_bytes);
  validator_ = std::make_unique<RequestValidator>(*model_, options_.limits);
  // The default policy serves every request that names none: it must fit the model's context
  // as a request's own policy must, so it goes through the same check, named by its flags.
  v1::CachePolicy default_policy;
  ToProto(policy, &default_policy);
  if (absl::StatusOr<std::optional<CachePolicy>> checked =
          validator_->Policy(true, default_policy, "cache_policy");
      !checked.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dense ? std::string("--dense")
              : absl::StrCat("--sink ", policy.sink_tokens, " --window ", policy.window_tokens),
        ": the server's default cache policy does not fit the model (", checked.status().message(),
        "); lower them, or serve with --dense"));
  }
  SchedulerOptions scheduler_options = options_.scheduler;
  if (!options_.session_store_dir.empty()) {
    absl::StatusOr<std::unique_ptr<DirectorySessionStore>> store =
        DirectorySessionStore::Open(options_.session_store_dir);
    if (!store.ok()) return store.status();
    session_store_ = std::move(*store);
    session_store_metrics_ = std::make_unique<SessionStoreMetrics>(*metrics_.registry(),
                                                                   ServedModelName(options_));
    scheduler_options.session_store = session_store_.get();
    scheduler_options.store_listener = session_store_metrics_.get();
    scheduler_options.persist_every_turn = options_.session_persist_turn;
    scheduler_options.session_store_ttl = options_.session_store_ttl.count() > 0
                                              ? options_.session_store_ttl
                                              : scheduler_options.session_limits.ttl;
    scheduler_options.server_id = server_id_;
    Log(spdlog::level::info, "session store",
        {{"store", session_store_->Describe()},
         {"persist", options_.session_persist_turn ? "after every turn, on eviction and at drain"
                                                   : "on eviction and at drain"},
         {"ttl_s", std::chrono::duration<double>(scheduler_options.session_store_ttl).count()},
         {"model", model_->fingerprint()}});
  }
  scheduler_ = std::make_unique<Scheduler>(*model_, scheduler_options, &metrics_);
  scheduler_->Start();
  auto serving = std::make_unique<ServingEngine>();
  serving->model = model_.get();
  serving->scheduler = scheduler_.get();
  serving->validator = validator_.get();
  serving->model_info = MakeModelInfo();
  const ServingEngine* engine = serving.get();
  service_.SetEngine(std::move(serving));
  for (const std::unique_ptr<Frontend>& frontend : frontends_) frontend->SetEngine(engine);
  return absl::OkStatus();
}

v1::ModelInfo Server::MakeModelInfo() const {
  const ModelConfig& config = model_->config();
  v1::ModelInfo info;
  info.set_model_name(model_->name());
  info.set_architecture("GPTNeoXForCausalLM");
  info.set_demo(model_->is_demo());
  info.set_parameter_count(static_cast<uint64_t>(config.ParameterCount()));
  info.set_quantization(model_->weights_format());
  info.set_weights_bytes(model_->weights_bytes());
  info.set_backend(model_->backend().name());
  info.set_num_layers(static_cast<uint32_t>(config.num_layers));
  info.set_hidden_size(static_cast<uint32_t>(config.hidden_size));
  info.set_num_heads(static_cast<uint32_t>(config.num_heads));
  info.set_vocab_size(static_cast<uint32_t>(config.vocab_size));
  info.set_context_tokens(static_cast<uint32_t>(config.max_position_embeddings));
  if (model_->tokenizer() != nullptr) {
    if (std::optional<int32_t> eos = model_->tokenizer()->eos_token_id()) {
      info.set_eos_token_id(static_cast<uint32_t>(*eos));
    }
  }
  ToProto(options_.scheduler.default_policy, info.mutable_default_cache_policy());
  v1::Limits* limits = info.mutable_limits();
  const SchedulerOptions& scheduler = options_.scheduler;
  limits->set_max_sessions(static_cast<uint32_t>(scheduler.session_limits.max_sessions));
  limits->set_session_ttl_ms(scheduler.session_limits.ttl.count());
  limits->set_max_cache_bytes(scheduler.session_limits.max_cache_bytes);
  limits->set_max_queue(static_cast<uint32_t>(scheduler.max_queue));
  limits->set_max_batch(static_cast<uint32_t>(scheduler.max_batch));
  limits->set_max_prompt_tokens(static_cast<uint32_t>(options_.limits.max_prompt_tokens));
  limits->set_max_new_tokens(static_cast<uint32_t>(options_.limits.max_new_tokens));
  limits->set_max_score_tokens(static_cast<uint32_t>(options_.limits.max_score_tokens));
  limits->set_prefill_chunk_tokens(static_cast<uint32_t>(scheduler.prefill_chunk_tokens));
  limits->set_max_stop_strings(static_cast<uint32_t>(options_.limits.max_stop_strings));
  limits->set_max_stop_string_bytes(static_cast<uint32_t>(options_.limits.max_stop_string_bytes));
  limits->set_max_stop_token_ids(static_cast<uint32_t>(options_.limits.max_stop_token_ids));
  info.set_server_version(SINKSERVE_VERSION);
  info.set_server_id(server_id_);
  return info;
}

bool Server::Drain(std::chrono::milliseconds grace) {
  if (drained_) return true;
  drained_ = true;
  if (grpc_server_) grpc_server_->GetHealthCheckService()->SetServingStatus(false);
  for (const std::unique_ptr<Frontend>& frontend : frontends_) frontend->SetDraining();
  bool clean = true;
  if (scheduler_) {
    scheduler_->StopAccepting();
    clean = scheduler_->WaitIdle(std::chrono::steady_clock::now() + grace);
    scheduler_->Stop();  // cancels what is left: their streams end with UNAVAILABLE
  }
  for (const std::unique_ptr<Frontend>& frontend : frontends_) frontend->Stop();
  if (grpc_server_) {
    // Every Generate and Score has ended by now; what gRPC still waits for is final messages on
    // their way out, unary calls of microseconds, and idle connections that would hold the
    // shutdown until its deadline. A short deadline keeps the exit within the grace period.
    grpc_server_->Shutdown(std::chrono::system_clock::now() + kShutdownAfterDrain);
    grpc_server_->Wait();
  }
  return clean;
}

int RunServer(const ServerOptions& options) {
  // Signals are taken synchronously by this thread: block them before any thread starts, so
  // every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Server server(options);
  if (absl::Status status = server.Start(); !status.ok()) {
    Log(spdlog::level::critical, "cannot start", {{"error", std::string(status.message())}});
    return 1;
  }
  // The drainer thread exists before the signal: draining must not need a new thread (or its
  // stack) when the host is out of memory.
  std::atomic<bool> drained{false};
  bool clean = true;
  int signal = 0;
  std::promise<void> signalled;
  std::thread drainer([&, signalled_future = signalled.get_future()] {
    signalled_future.wait();
    clean = server.Drain(options.grace_period);
    drained = true;
  });
  sigwait(&signals, &signal);
  Log(spdlog::level::info, "draining",
      {{"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"},
       {"grace_s", std::chrono::duration<double>(options.grace_period).count()},
       {"health", "NOT_SERVING"}});
  signalled.set_value();
  // Whether the second signal found requests still queued or running (it cancels them).
  bool cut_short = false;
  while (!drained) {
    const timespec poll{0, 100'000'000};
    if (sigtimedwait(&signals, nullptr, &poll) > 0) {
      Log(spdlog::level::warn, "second signal: cancelling in-flight requests now");
      cut_short = !server.scheduler()->WaitIdle(std::chrono::steady_clock::now());
      server.scheduler()->Stop();
    }
  }
  drainer.join();
  Log(spdlog::level::info, "stopped",
      {{"in_flight", cut_short ? "some cancelled by the second signal"
                     : clean   ? "all finished"
                               : "some cancelled after the grace period"}});
  return 0;
}

}  // namespace sinkserve::server
