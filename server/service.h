// SinkserveService: the sinkserve.v1.Sinkserve RPCs on the gRPC callback API.
//
// Handlers run on gRPC's threads and never block: they parse and validate the request, then
// hand it to the scheduler (Submit for Generate/Score, a session command for the others).
// Streams are StreamReactors fed by scheduler events; unary RPCs finish from the scheduler's
// callback. Every method is registered raw (ByteBuffer) so that malformed requests, bad UTF-8
// included, get INVALID_ARGUMENT naming the field (see request_parsing.h).
// With a bearer token configured, a call without it ends UNAUTHENTICATED first (auth.h).
// Until the model is loaded every RPC answers UNAVAILABLE.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "engine/serving/scheduler.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/validation.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"

namespace sinkserve::server {

using RawSinkserveService = v1::Sinkserve::WithRawCallbackMethod_Generate<
    v1::Sinkserve::WithRawCallbackMethod_Score<v1::Sinkserve::WithRawCallbackMethod_CreateSession<
        v1::Sinkserve::WithRawCallbackMethod_GetSession<
            v1::Sinkserve::WithRawCallbackMethod_ListSessions<
                v1::Sinkserve::WithRawCallbackMethod_CloseSession<
                    v1::Sinkserve::WithRawCallbackMethod_GetModelInfo<
                        v1::Sinkserve::Service>>>>>>>;

// What the RPCs use once the model is loaded; outlives every RPC.
struct ServingEngine {
  const Model* model = nullptr;
  Scheduler* scheduler = nullptr;
  const RequestValidator* validator = nullptr;
  v1::ModelInfo model_info;
};

class SinkserveService final : public RawSinkserveService {
 public:
  SinkserveService(Metrics* metrics, BearerToken token);
  ~SinkserveService() override;

  // Starts serving: from now on RPCs reach `engine`.
  void SetEngine(std::unique_ptr<ServingEngine> engine);

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Score(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;

 private:
  // A unary call in progress: its reactor, response buffer and start time.
  struct UnaryCall {
    SinkserveService* service;
    grpc::ServerUnaryReactor* reactor;
    grpc::ByteBuffer* response;
    const char* rpc;
    std::chrono::steady_clock::time_point start;

    void Finish(const grpc::Status& status) const;
    void Reply(const google::protobuf::Message& message) const;
    // Replies with the session, or finishes with the error.
    Scheduler::SessionCallback SessionReply() const;
  };

  template <typename Request, typename Stream, typename Reactor, typename Validate>
  Reactor* StartStream(grpc::CallbackServerContext* context, const grpc::ByteBuffer& raw,
                       Reactor* reactor, Validate validate);
  template <typename Request>
  const ServingEngine* StartUnary(const grpc::CallbackServerContext& context, const UnaryCall& call,
                                  const grpc::ByteBuffer& raw, Request* request);
  // The engine for a call that is authenticated, once the model is loaded; else the status
  // that ends the call (UNAUTHENTICATED, or UNAVAILABLE while loading).
  absl::StatusOr<const ServingEngine*> Admit(const grpc::CallbackServerContext& context) const;

  const ServingEngine* engine() const { return engine_.load(std::memory_order_acquire); }
  std::string NewRequestId();

  Metrics* metrics_;
  BearerToken token_;
  std::unique_ptr<ServingEngine> engine_owner_;
  std::atomic<const ServingEngine*> engine_{nullptr};
  std::atomic<uint64_t> next_request_{1};
};

}  // namespace sinkserve::server
