#include "server/service.h"

#include "absl/strings/str_cat.h"
#include "server/convert.h"
#include "server/logging.h"
#include "server/request_parsing.h"
#include "server/session_metadata.h"
#include "server/status.h"
#include "server/stream_reactor.h"

namespace sinkserve::server {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kLoading[] = "the model is loading; retry when health reports SERVING";

// The session a GetSession or CloseSession names (field or x-session-id metadata), validated.
absl::StatusOr<std::string> ValidSessionId(const grpc::ServerContextBase& context,
                                           const ServingEngine& serving, const std::string& field) {
  absl::StatusOr<std::string> id = CallSessionId(context, field);
  if (!id.ok()) return id.status();
  if (absl::Status valid = serving.validator->SessionId(*id); !valid.ok()) return valid;
  return id;
}

double MillisSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The call's deadline on the steady clock (none when the client set none).
std::optional<Clock::time_point> Deadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return std::nullopt;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - now);
}

// The names a request's fields go by in engine errors: the prompt field it sent (text when it
// sent neither).
FieldNames NamesOf(const v1::GenerateRequest& request) {
  const bool ids = request.prompt_text().empty() && request.prompt_token_ids_size() > 0;
  return FieldNames{ids ? "prompt_token_ids" : "prompt_text", ""};
}

FieldNames NamesOf(const v1::ScoreRequest& request) {
  const bool ids = request.text().empty() && request.token_ids_size() > 0;
  return FieldNames{"", ids ? "token_ids" : "text"};
}

// --- Generate --------------------------------------------------------------------------------

class GenerateReactor final : public StreamReactor<v1::GenerateResponse> {
 public:
  explicit GenerateReactor(Metrics* metrics) : metrics_(metrics) {}
  // The engine's result, for the log line (set before Close).
  void SetResult(GenerateResult result) { result_ = std::move(result); }

 protected:
  bool Merge(v1::GenerateResponse& queued, v1::GenerateResponse& next) override {
    if (queued.has_result()) return false;
    queued.mutable_text()->append(next.text());
    queued.mutable_token_ids()->MergeFrom(next.token_ids());
    queued.mutable_logprobs()->MergeFrom(next.logprobs());
    if (!next.session_id().empty()) queued.set_session_id(next.session_id());
    if (next.has_result()) queued.mutable_result()->Swap(next.mutable_result());
    return true;
  }

  void Done(const grpc::Status& status) override {
    metrics_->CountRequest("grpc", "Generate", status.error_code());
    const GenerateResult& r = result_;
    const spdlog::level::level_enum level =
        status.ok() || status.error_code() == grpc::StatusCode::CANCELLED ? spdlog::level::info
                                                                          : spdlog::level::warn;
    if (r.rejected || r.request_id.empty()) {
      Log(level, "request",
          {{"rpc", "Generate"},
           {"request_id", r.request_id},
           {"code", StatusCodeName(status.error_code())},
           {"e2e_ms", MillisSince(start())},
           {"error", status.error_message()}});
      return;
    }
    Log(level, "request",
        {{"rpc", "Generate"},
         {"request_id", r.request_id},
         {"code", StatusCodeName(status.error_code())},
         {"session", r.session_id},
         {"finish_reason", FinishReasonName(r.finish_reason)},
         {"detail", r.finish_detail},
         {"prompt_tokens", r.prompt_tokens},
         {"generated_tokens", r.generated_tokens},
         {"evicted_tokens", r.evicted_tokens},
         {"ttft_ms", r.timings.time_to_first_token_seconds * 1e3},
         {"tpot_ms", r.timings.time_per_output_token_seconds * 1e3},
         {"queue_ms", r.timings.queue_seconds * 1e3},
         {"attention_ms", r.timings.attention_seconds * 1e3},
         {"e2e_ms", r.timings.e2e_seconds * 1e3}});
  }

 private:
  Metrics* metrics_;
  GenerateResult result_;
};

// The scheduler's view of a Generate stream.
class GenerateStream final : public GenerateObserver {
 public:
  GenerateStream(GenerateReactor* reactor, const ServingEngine& serving, FieldNames names)
      : reactor_(reactor), server_id_(serving.model_info.server_id()), names_(std::move(names)) {}

  void OnStarted(const std::string& session_id) override { session_id_ = session_id; }

  void OnTokens(TokenDelta delta) override {
    v1::GenerateResponse response;
    response.set_text(std::move(delta.text));
    response.mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
    response.mutable_logprobs()->Add(delta.logprobs.begin(), delta.logprobs.end());
    if (first_) response.set_session_id(session_id_);
    first_ = false;
    reactor_->Send(std::move(response));
  }

  void OnFinished(GenerateResult result) override {
    const grpc::Status status = ToGrpcStatus(result.status, names_);
    if (!result.rejected) {
      v1::GenerateResponse response;
      response.set_session_id(result.session_id);
      ToProto(result, response.mutable_result());
      response.mutable_result()->set_server_id(server_id_);
      reactor_->Send(std::move(response));
    }
    reactor_->SetResult(std::move(result));
    reactor_->Close(status);
  }

 private:
  GenerateReactor* reactor_;
  const std::string& server_id_;  // ServingEngine outlives every RPC
  const FieldNames names_;
  std::string session_id_;
  bool first_ = true;
};

// --- Score -----------------------------------------------------------------------------------

class ScoreReactor final : public StreamReactor<v1::ScoreResponse> {
 public:
  explicit ScoreReactor(Metrics* metrics) : metrics_(metrics) {}
  void SetResult(ScoreResult result) { result_ = std::move(result); }

 protected:
  bool Merge(v1::ScoreResponse& queued, v1::ScoreResponse& next) override {
    if (queued.has_result()) return false;
    queued.set_scored_tokens(next.scored_tokens());
    queued.set_total_tokens(next.total_tokens());
    queued.mutable_token_nll()->MergeFrom(next.token_nll());
    if (next.has_result()) queued.mutable_result()->Swap(next.mutable_result());
    return true;
  }

  void Done(const grpc::Status& status) override {
    metrics_->CountRequest("grpc", "Score", status.error_code());
    const ScoreResult& r = result_;
    if (r.rejected || r.request_id.empty()) {
      Log(spdlog::level::warn, "request",
          {{"rpc", "Score"},
           {"request_id", r.request_id},
           {"code", StatusCodeName(status.error_code())},
           {"e2e_ms", MillisSince(start())},
           {"error", status.error_message()}});
      return;
    }
    Log(status.ok() || status.error_code() == grpc::StatusCode::CANCELLED ? spdlog::level::info
                                                                          : spdlog::level::warn,
        "request",
        {{"rpc", "Score"},
         {"request_id", r.request_id},
         {"code", StatusCodeName(status.error_code())},
         {"tokens", r.tokens},
         {"scored_tokens", r.scored_tokens},
         {"ppl", r.perplexity},
         {"cache", r.cache_description},
         {"queue_ms", r.timings.queue_seconds * 1e3},
         {"attention_ms", r.timings.attention_seconds * 1e3},
         {"e2e_ms", r.timings.e2e_seconds * 1e3},
         {"error", status.error_message()}});
  }

 private:
  Metrics* metrics_;
  ScoreResult result_;
};

class ScoreStream final : public ScoreObserver {
 public:
  ScoreStream(ScoreReactor* reactor, const ServingEngine& serving, FieldNames names)
      : reactor_(reactor), server_id_(serving.model_info.server_id()), names_(std::move(names)) {}

  void OnProgress(ScoreProgress progress) override {
    v1::ScoreResponse response;
    response.set_scored_tokens(static_cast<uint32_t>(progress.scored_tokens));
    response.set_total_tokens(static_cast<uint32_t>(progress.total_tokens));
    response.mutable_token_nll()->Add(progress.token_nll.begin(), progress.token_nll.end());
    reactor_->Send(std::move(response));
  }

  void OnFinished(ScoreResult result) override {
    const grpc::Status status = ToGrpcStatus(result.status, names_);
    if (result.status.ok()) {
      v1::ScoreResponse response;
      response.set_scored_tokens(static_cast<uint32_t>(result.scored_tokens));
      response.set_total_tokens(static_cast<uint32_t>(result.tokens));
      ToProto(result, response.mutable_result());
      response.mutable_result()->set_server_id(server_id_);
      reactor_->Send(std::move(response));
    }
    reactor_->SetResult(std::move(result));
    reactor_->Close(status);
  }

 private:
  ScoreReactor* reactor_;
  const std::string& server_id_;  // ServingEngine outlives every RPC
  const FieldNames names_;
};

}  // namespace

// --- The service -----------------------------------------------------------------------------

SinkserveService::SinkserveService(Metrics* metrics, BearerToken token)
    : metrics_(metrics), token_(std::move(token)) {}

absl::StatusOr<const ServingEngine*> SinkserveService::Admit(
    const grpc::CallbackServerContext& context) const {
  if (grpc::Status authorized = token_.Check(context); !authorized.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(authorized.error_code()),
                        authorized.error_message());
  }
  const ServingEngine* serving = engine();
  if (serving == nullptr) return absl::UnavailableError(kLoading);
  return serving;
}

SinkserveService::~SinkserveService() = default;

void SinkserveService::SetEngine(std::unique_ptr<ServingEngine> engine) {
  engine_owner_ = std::move(engine);
  engine_.store(engine_owner_.get(), std::memory_order_release);
}

std::string SinkserveService::NewRequestId() {
  return absl::StrCat("r", next_request_.fetch_add(1, std::memory_order_relaxed));
}

void SinkserveService::UnaryCall::Finish(const grpc::Status& status) const {
  service->metrics_->CountRequest("grpc", rpc, status.error_code());
  if (status.ok()) {
    Log(spdlog::level::info, "request",
        {{"rpc", rpc}, {"code", "OK"}, {"e2e_ms", MillisSince(start)}});
  } else {
    Log(spdlog::level::warn, "request",
        {{"rpc", rpc},
         {"code", StatusCodeName(status.error_code())},
         {"e2e_ms", MillisSince(start)},
         {"error", status.error_message()}});
  }
  reactor->Finish(status);
}

void SinkserveService::UnaryCall::Reply(const google::protobuf::Message& message) const {
  *response = SerializeResponse(message);
  Finish(grpc::Status::OK);
}

// Parses and validates a streaming request and submits it; any refusal closes the stream.
template <typename Request, typename Stream, typename Reactor, typename Validate>
Reactor* SinkserveService::StartStream(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer& raw, Reactor* reactor,
                                       Validate validate) {
  absl::StatusOr<const ServingEngine*> admitted = Admit(*context);
  if (!admitted.ok()) {
    reactor->Close(ToGrpcStatus(admitted.status()));
    return reactor;
  }
  const ServingEngine* serving = *admitted;
  Request request;
  if (grpc::Status parsed = ParseRequest(raw, &request); !parsed.ok()) {
    reactor->Close(parsed);
    return reactor;
  }
  auto spec = validate(*serving->validator, request);
  if (!spec.ok()) {
    reactor->Close(ToGrpcStatus(spec.status()));
    return reactor;
  }
  spec->request_id = NewRequestId();
  spec->client_api = "grpc";
  spec->arrival = reactor->start();
  spec->deadline = Deadline(*context);
  const FieldNames names = NamesOf(request);
  absl::StatusOr<std::shared_ptr<RequestControl>> control = serving->scheduler->Submit(
      std::move(*spec), std::make_shared<Stream>(reactor, *serving, names));
  if (!control.ok()) {
    reactor->Close(ToGrpcStatus(control.status(), names));
    return reactor;
  }
  reactor->SetControl(*control);
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SinkserveService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  return StartStream<v1::GenerateRequest, GenerateStream>(
      context, *raw, new GenerateReactor(metrics_),
      [context](const RequestValidator& validator,
                const v1::GenerateRequest& request) -> absl::StatusOr<GenerateSpec> {
        absl::StatusOr<std::string> session_id = CallSessionId(*context, request.session_id());
        if (!session_id.ok()) return session_id.status();
        if (*session_id == request.session_id()) return validator.Generate(request);
        // Named by the metadata alone: a new kept stream gets that id, else it is continued.
        if (request.keep_session()) {
          if (absl::Status valid = validator.SessionId(*session_id); !valid.ok()) return valid;
          absl::StatusOr<GenerateSpec> spec = validator.Generate(request);
          if (spec.ok()) spec->new_session_id = *session_id;
          return spec;
        }
        v1::GenerateRequest named = request;
        named.set_session_id(*session_id);
        return validator.Generate(named);
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SinkserveService::Score(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  return StartStream<v1::ScoreRequest, ScoreStream>(
      context, *raw, new ScoreReactor(metrics_),
      [](const RequestValidator& validator, const v1::ScoreRequest& request) {
        return validator.Score(request);
      });
}

// The engine, once the request parsed; otherwise the call is finished and nullptr returned.
template <typename Request>
const ServingEngine* SinkserveService::StartUnary(const grpc::CallbackServerContext& context,
                                                  const UnaryCall& call,
                                                  const grpc::ByteBuffer& raw, Request* request) {
  absl::StatusOr<const ServingEngine*> admitted = Admit(context);
  if (!admitted.ok()) {
    call.Finish(ToGrpcStatus(admitted.status()));
    return nullptr;
  }
  const ServingEngine* serving = *admitted;
  if (grpc::Status parsed = ParseRequest(raw, request); !parsed.ok()) {
    call.Finish(parsed);
    return nullptr;
  }
  return serving;
}

Scheduler::SessionCallback SinkserveService::UnaryCall::SessionReply() const {
  return [call = *this](absl::StatusOr<SessionInfo> info) {
    if (!info.ok()) return call.Finish(ToGrpcStatus(info.status()));
    v1::Session session;
    ToProto(*info, &session);
    call.Reply(session);
  };
}

grpc::ServerUnaryReactor* SinkserveService::CreateSession(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* raw,
                                                          grpc::ByteBuffer* response) {
  const UnaryCall call{this, context->DefaultReactor(), response, "CreateSession", Clock::now()};
  v1::CreateSessionRequest request;
  const ServingEngine* serving = StartUnary(*context, call, *raw, &request);
  if (serving == nullptr) return call.reactor;
  absl::StatusOr<std::optional<CachePolicy>> policy = serving->validator->Policy(
      request.has_cache_policy(), request.cache_policy(), "cache_policy");
  if (!policy.ok()) {
    call.Finish(ToGrpcStatus(policy.status()));
    return call.reactor;
  }
  absl::StatusOr<SamplingOverrides> sampling =
      serving->validator->Sampling(request.sampling_defaults(), "sampling_defaults");
  if (!sampling.ok()) {
    call.Finish(ToGrpcStatus(sampling.status()));
    return call.reactor;
  }
  // The x-session-id metadata, when sent, names the new session.
  const absl::StatusOr<std::string> id = CallSessionId(*context, "");
  if (absl::Status valid = id->empty() ? absl::OkStatus() : serving->validator->SessionId(*id);
      !valid.ok()) {
    call.Finish(ToGrpcStatus(valid));
    return call.reactor;
  }
  serving->scheduler->CreateSession(*policy, *sampling, call.SessionReply(), *id);
  return call.reactor;
}

grpc::ServerUnaryReactor* SinkserveService::GetSession(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* raw,
                                                       grpc::ByteBuffer* response) {
  const UnaryCall call{this, context->DefaultReactor(), response, "GetSession", Clock::now()};
  v1::GetSessionRequest request;
  const ServingEngine* serving = StartUnary(*context, call, *raw, &request);
  if (serving == nullptr) return call.reactor;
  const absl::StatusOr<std::string> id = ValidSessionId(*context, *serving, request.session_id());
  if (!id.ok()) {
    call.Finish(ToGrpcStatus(id.status()));
    return call.reactor;
  }
  serving->scheduler->GetSession(*id, call.SessionReply());
  return call.reactor;
}

grpc::ServerUnaryReactor* SinkserveService::ListSessions(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* raw,
                                                         grpc::ByteBuffer* response) {
  const UnaryCall call{this, context->DefaultReactor(), response, "ListSessions", Clock::now()};
  v1::ListSessionsRequest request;
  const ServingEngine* serving = StartUnary(*context, call, *raw, &request);
  if (serving == nullptr) return call.reactor;
  serving->scheduler->ListSessions([call](std::vector<SessionInfo> sessions) {
    v1::ListSessionsResponse list;
    for (const SessionInfo& info : sessions) ToProto(info, list.add_sessions());
    call.Reply(list);
  });
  return call.reactor;
}

grpc::ServerUnaryReactor* SinkserveService::CloseSession(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* raw,
                                                         grpc::ByteBuffer* response) {
  const UnaryCall call{this, context->DefaultReactor(), response, "CloseSession", Clock::now()};
  v1::CloseSessionRequest request;
  const ServingEngine* serving = StartUnary(*context, call, *raw, &request);
  if (serving == nullptr) return call.reactor;
  const absl::StatusOr<std::string> id = ValidSessionId(*context, *serving, request.session_id());
  if (!id.ok()) {
    call.Finish(ToGrpcStatus(id.status()));
    return call.reactor;
  }
  serving->scheduler->CloseSession(*id, call.SessionReply());
  return call.reactor;
}

grpc::ServerUnaryReactor* SinkserveService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* raw,
                                                         grpc::ByteBuffer* response) {
  const UnaryCall call{this, context->DefaultReactor(), response, "GetModelInfo", Clock::now()};
  v1::GetModelInfoRequest request;
  const ServingEngine* serving = StartUnary(*context, call, *raw, &request);
  if (serving == nullptr) return call.reactor;
  call.Reply(serving->model_info);
  return call.reactor;
}

}  // namespace sinkserve::server
