#include "server/http/completions.h"

#include <httplib.h>

#include <ctime>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/http/client_connection.h"
#include "server/http/completion_run.h"
#include "server/http/openai_errors.h"
#include "server/http/openai_request.h"
#include "server/http/openai_server.h"
#include "server/logging.h"

namespace sinkserve::server::http {
namespace {

using Json = nlohmann::json;
using Part = ResponseFormat::Part;

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

const char* FinishReasonText(FinishReason reason) {
  return reason == FinishReason::kFinishReasonStop ? "stop" : "length";
}

// /v1/completions' `logprobs` object, with text_offset running on across chunks.
class TextLogprobs final : public LogprobsBuilder {
 public:
  explicit TextLogprobs(const Model& model) : model_(&model) {}

  void Add(int32_t token, std::optional<double> logprob,
           const std::vector<TokenLogprob>& top) override {
    std::string text = TokenString(*model_, token);
    tokens_.push_back(text);
    text_offset_.push_back(offset_);
    offset_ += text.size();
    if (!logprob) {
      token_logprobs_.push_back(nullptr);
      top_logprobs_.push_back(nullptr);
      return;
    }
    token_logprobs_.push_back(*logprob);
    Json candidates = Json::object();
    for (const TokenLogprob& candidate : top) {
      candidates.emplace(TokenString(*model_, candidate.token), candidate.logprob);
    }
    candidates.emplace(text, *logprob);  // the chosen token is always there (kept if present)
    top_logprobs_.push_back(std::move(candidates));
  }

  Json Take() override {
    Json json = {{"tokens", std::move(tokens_)},
                 {"token_logprobs", std::move(token_logprobs_)},
                 {"top_logprobs", std::move(top_logprobs_)},
                 {"text_offset", std::move(text_offset_)}};
    tokens_ = token_logprobs_ = top_logprobs_ = text_offset_ = Json::array();
    return json;
  }

 private:
  const Model* model_;
  Json tokens_ = Json::array(), token_logprobs_ = Json::array(), top_logprobs_ = Json::array(),
       text_offset_ = Json::array();
  size_t offset_ = 0;
};

// /v1/completions' shapes: OpenAI's text_completion.
class TextFormat final : public ResponseFormat {
 public:
  const char* endpoint() const override { return "/v1/completions"; }
  const char* id_prefix() const override { return "cmpl-"; }
  const char* prompt_param() const override { return "prompt"; }
  const char* object(Part) const override { return "text_completion"; }
  std::unique_ptr<LogprobsBuilder> NewLogprobs(const Model& model) const override {
    return std::make_unique<TextLogprobs>(model);
  }
  Json Choice(size_t index, std::string text, Json logprobs, Json finish_reason,
              Part) const override {
    return {{"index", index},
            {"text", std::move(text)},
            {"logprobs", std::move(logprobs)},
            {"finish_reason", std::move(finish_reason)}};
  }
};

// A parsed, validated request and what runs it.
struct Plan {
  CompletionRequest request;
  std::vector<GenerateSpec> choices;            // prompt p's choice c at p * n + c
  std::vector<std::vector<int32_t>> prompts;    // the prompts' token ids
  std::vector<std::string> echo;                // the prompts' text, when echo
  std::vector<PromptLogprobs> prompt_logprobs;  // when echo and logprobs
  bool generate = true;                         // false: echo with max_tokens 0 only scores
};

absl::StatusOr<Plan> MakePlan(const CompletionContext& context, CompletionRequest parsed,
                              const ClientConnection& client) {
  Plan plan;
  plan.request = std::move(parsed);
  const CompletionRequest& request = plan.request;
  if (!request.model.empty() && request.model != context.model_id) {
    return absl::NotFoundError(absl::StrCat("model: '", request.model, "' is not served here; ",
                                            "this server serves '", context.model_id, "'"));
  }
  const Model& model = *context.engine.model;
  for (size_t p = 0; p < request.prompts.size(); ++p) {
    absl::StatusOr<GenerateSpec> spec = context.engine.validator->Generate(request.prompts[p]);
    if (!spec.ok()) return ToOpenAiNames(spec.status());
    spec->top_logprobs = std::max(request.logprobs, 0);
    plan.prompts.push_back(spec->prompt);
    if (request.echo) {
      plan.echo.push_back(!request.prompts[p].prompt_text().empty() || model.tokenizer() == nullptr
                              ? request.prompts[p].prompt_text()
                              : model.tokenizer()->DecodeLossy(spec->prompt));
    }
    for (int c = 0; c < request.n; ++c) {
      GenerateSpec choice = *spec;
      if (choice.sampling.seed) *choice.sampling.seed += static_cast<uint64_t>(c);
      choice.request_id = absl::StrCat(context.request_id, "-", p * request.n + c);
      plan.choices.push_back(std::move(choice));
    }
  }
  const GenerateSpec& first = plan.choices.front();
  if (request.echo && request.logprobs >= 0) {
    if (!first.session_id.empty()) {
      return absl::InvalidArgumentError(
          "echo: prompt logprobs are computed for one-shot prompts, not a session's turn");
    }
    for (const std::vector<int32_t>& prompt : plan.prompts) {
      PromptLogprobs& logprobs = plan.prompt_logprobs.emplace_back();
      if (prompt.size() < 2) continue;
      ScoreSpec score;
      score.request_id = absl::StrCat(context.request_id, "-echo");
      score.tokens = prompt;
      score.policy = first.policy;
      score.top_logprobs = request.logprobs;
      absl::StatusOr<PromptLogprobs> scored = ScorePrompt(*context.engine.scheduler, score, client);
      if (!scored.ok()) return scored.status();
      logprobs = std::move(*scored);
    }
  }
  plan.generate = !(request.echo && first.max_new_tokens == 0 && first.session_id.empty() &&
                    !first.keep_session);
  return plan;
}

// One choice's output so far.
struct Choice {
  std::string text;
  std::unique_ptr<LogprobsBuilder> logprobs;
  bool streamed = false;  // a chunk of it was sent
  std::optional<FinishReason> finish;
  int64_t generated = 0;
};

// The stream or the response of one request, fed by its CompletionRun.
class Completion {
 public:
  Completion(const CompletionContext& context, const ResponseFormat& format, Plan plan,
             ClientConnection client)
      : engine_(context.engine),
        metrics_(context.metrics),
        model_id_(context.model_id),
        format_(format),
        id_(absl::StrCat(format.id_prefix(), context.request_id)),
        created_(std::time(nullptr)),
        plan_(std::move(plan)),
        choices_(plan_.choices.size()),
        run_(client) {
    for (Choice& choice : choices_) choice.logprobs = format_.NewLogprobs(*engine_.model);
    if (!plan_.generate) {
      for (Choice& choice : choices_) choice.finish = FinishReason::kFinishReasonLength;
    }
  }

  absl::Status Start() {
    if (!plan_.generate) return absl::OkStatus();
    if (absl::Status status = run_.Submit(*engine_.scheduler, plan_.choices); !status.ok()) {
      return status;
    }
    return run_.WaitAdmitted();
  }

  void Cancel() { run_.Cancel(); }

  // The whole response, once every choice ended (or the first error).
  absl::StatusOr<std::string> Response() {
    AddEcho();
    absl::Status error;
    for (std::vector<CompletionRun::Event> events;
         plan_.generate && !(events = run_.Take()).empty();) {
      for (CompletionRun::Event& event : events) {
        absl::Status status = Apply(event);
        if (error.ok() && !status.ok()) error = status;
      }
    }
    if (!error.ok()) return error;
    Json choices = Json::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
      choices.push_back(ChoiceJson(i, std::move(choices_[i].text)));
    }
    Json json = Header(Part::kWhole);
    json["choices"] = std::move(choices);
    json["usage"] = Usage();
    if (!session_id_.empty()) json["session_id"] = session_id_;
    return Dump(json);
  }

  // The next bytes of the event stream (waiting for them); "" after [DONE].
  std::string NextEvents() {
    std::string out;
    while (out.empty() && !done_) out = NextBatch();
    return out;
  }

  void Count(absl::StatusCode code) const {
    metrics_->CountRequest("openai", format_.endpoint(), static_cast<grpc::StatusCode>(code));
  }

 private:
  // The events of the next batch; "" when it held none to send (an admission).
  std::string NextBatch() {
    std::string out;
    if (!started_) {
      started_ = true;
      AddEcho();
      if (plan_.request.echo) {
        for (size_t i = 0; i < choices_.size(); ++i) Chunk(i, std::move(choices_[i].text), &out);
        return out;
      }
    }
    std::vector<CompletionRun::Event> events;
    if (plan_.generate) events = run_.Take();
    if (events.empty()) {
      if (!plan_.generate) {  // echo only: the choices end here
        for (size_t i = 0; i < choices_.size(); ++i) Chunk(i, "", &out);
      }
      if (plan_.request.include_usage) {
        Json usage = Header(Part::kChunk);
        usage["choices"] = Json::array();
        usage["usage"] = Usage();
        absl::StrAppend(&out, "data: ", Dump(usage), "\n\n");
      }
      absl::StrAppend(&out, "data: [DONE]\n\n");
      done_ = true;
      return out;
    }
    // Events of one choice that piled up (a slow reader) go out as one chunk.
    std::vector<size_t> order;
    std::vector<bool> pending(choices_.size(), false);
    for (CompletionRun::Event& event : events) {
      if (absl::Status status = Apply(event); !status.ok()) {
        absl::StrAppend(&out, "data: ", ErrorBody(status, HttpStatus(status.code())), "\n\n");
        continue;
      }
      if (!pending[event.choice] && (event.delta || event.result)) {
        pending[event.choice] = true;
        order.push_back(event.choice);
      }
    }
    for (size_t i : order) Chunk(i, std::exchange(choices_[i].text, {}), &out);
    return out;
  }

  void AddEcho() {
    if (!plan_.request.echo) return;
    const size_t n = static_cast<size_t>(plan_.request.n);
    for (size_t i = 0; i < choices_.size(); ++i) {
      const size_t p = i / n;
      choices_[i].text = plan_.echo[p];
      if (plan_.request.logprobs < 0) continue;
      const std::vector<int32_t>& prompt = plan_.prompts[p];
      const PromptLogprobs& scored = plan_.prompt_logprobs[p];
      for (size_t t = 0; t < prompt.size(); ++t) {
        if (t == 0) {
          choices_[i].logprobs->Add(prompt[t], std::nullopt, {});
        } else {
          static const std::vector<TokenLogprob> kNone;
          choices_[i].logprobs->Add(prompt[t], -scored.nll[t - 1],
                                    scored.top.empty() ? kNone : scored.top[t - 1]);
        }
      }
    }
  }

  // Folds an event into its choice; a choice that ended in error returns the error.
  absl::Status Apply(CompletionRun::Event& event) {
    Choice& choice = choices_[event.choice];
    if (event.delta) {
      TokenDelta& delta = *event.delta;
      choice.text += delta.text;
      if (plan_.request.logprobs >= 0) {
        for (size_t t = 0; t < delta.token_ids.size(); ++t) {
          static const std::vector<TokenLogprob> kNone;
          choice.logprobs->Add(delta.token_ids[t], delta.logprobs[t],
                               t < delta.top_logprobs.size() ? delta.top_logprobs[t] : kNone);
        }
      }
    }
    if (event.result) {
      const GenerateResult& result = *event.result;
      LogResult(result);
      choice.generated = result.generated_tokens;
      if (!result.session_id.empty()) session_id_ = result.session_id;
      if (!result.status.ok()) return result.status;
      choice.finish = result.finish_reason;
    }
    return absl::OkStatus();
  }

  // One line per choice, as the gRPC service logs each Generate.
  void LogResult(const GenerateResult& r) const {
    Log(r.status.ok() || r.status.code() == absl::StatusCode::kCancelled ? spdlog::level::info
                                                                         : spdlog::level::warn,
        "request",
        {{"api", "openai"},
         {"endpoint", format_.endpoint()},
         {"request_id", r.request_id},
         {"code", absl::StatusCodeToString(r.status.code())},
         {"session", r.session_id},
         {"finish_reason", FinishReasonName(r.finish_reason)},
         {"detail", r.finish_detail},
         {"prompt_tokens", r.prompt_tokens},
         {"generated_tokens", r.generated_tokens},
         {"ttft_ms", r.timings.time_to_first_token_seconds * 1e3},
         {"tpot_ms", r.timings.time_per_output_token_seconds * 1e3},
         {"queue_ms", r.timings.queue_seconds * 1e3},
         {"e2e_ms", r.timings.e2e_seconds * 1e3},
         {"error", std::string(r.status.message())}});
  }

  Json Header(Part part) const {
    return {
        {"id", id_}, {"object", format_.object(part)}, {"created", created_}, {"model", model_id_}};
  }

  Json ChoiceJson(size_t i, std::string text, Part part = Part::kWhole) {
    Choice& choice = choices_[i];
    return format_.Choice(
        i, std::move(text), plan_.request.logprobs >= 0 ? choice.logprobs->Take() : Json(nullptr),
        choice.finish ? Json(FinishReasonText(*choice.finish)) : Json(nullptr), part);
  }

  void Chunk(size_t i, std::string text, std::string* out) {
    Json chunk = Header(Part::kChunk);
    const Part part = std::exchange(choices_[i].streamed, true) ? Part::kChunk : Part::kFirstChunk;
    chunk["choices"] = Json::array({ChoiceJson(i, std::move(text), part)});
    if (!session_id_.empty()) chunk["session_id"] = session_id_;
    absl::StrAppend(out, "data: ", Dump(chunk), "\n\n");
  }

  Json Usage() const {
    int64_t prompt = 0, completion = 0;
    for (const std::vector<int32_t>& tokens : plan_.prompts)
      prompt += static_cast<int64_t>(tokens.size());
    for (const Choice& choice : choices_) completion += choice.generated;
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion}};
  }

  const ServingEngine& engine_;
  Metrics* metrics_;
  const std::string model_id_;
  const ResponseFormat& format_;
  const std::string id_;
  const int64_t created_;
  Plan plan_;
  std::vector<Choice> choices_;
  CompletionRun run_;
  std::string session_id_;
  bool started_ = false;
  bool done_ = false;
};

}  // namespace

std::string TokenString(const Model& model, int32_t id) {
  if (const Tokenizer* tokenizer = model.tokenizer()) return std::string(tokenizer->TokenBytes(id));
  return absl::StrCat("token_id:", id);
}

void HandleCompletions(const CompletionContext& context, const httplib::Request& request,
                       httplib::Response& response) {
  static const TextFormat kFormat;
  absl::StatusOr<CompletionRequest> parsed = ParseCompletionRequest(request.body);
  if (!parsed.ok())
    return ReplyError(context.metrics, kFormat.endpoint(), parsed.status(), response);
  ServeCompletion(context, kFormat, std::move(*parsed), request, response);
}

void ServeCompletion(const CompletionContext& context, const ResponseFormat& format,
                     CompletionRequest request, const httplib::Request& http_request,
                     httplib::Response& response) {
  const char* endpoint = format.endpoint();
  const ClientConnection client(http_request);
  absl::StatusOr<Plan> plan = MakePlan(context, std::move(request), client);
  if (!plan.ok()) {
    absl::Status status = plan.status();
    if (absl::StartsWith(status.message(), "prompt")) {  // the validator's, about the prompt
      status = absl::Status(status.code(),
                            absl::StrCat(format.prompt_param(), status.message().substr(6)));
    }
    return ReplyError(context.metrics, endpoint, status, response);
  }
  const bool stream = plan->request.stream;
  auto completion = std::make_shared<Completion>(context, format, std::move(*plan), client);
  if (absl::Status started = completion->Start(); !started.ok()) {
    return ReplyError(context.metrics, endpoint, started, response);
  }
  if (!stream) {
    absl::StatusOr<std::string> body = completion->Response();
    if (!body.ok()) return ReplyError(context.metrics, endpoint, body.status(), response);
    completion->Count(absl::StatusCode::kOk);
    response.set_content(*body, "application/json");
    return;
  }
  response.set_header("Cache-Control", "no-cache");
  response.set_chunked_content_provider(
      "text/event-stream",
      [completion](size_t, httplib::DataSink& sink) {
        const std::string events = completion->NextEvents();
        if (events.empty()) {
          sink.done();
          return true;
        }
        if (!sink.write(events.data(), events.size())) {
          completion->Cancel();  // the client went away
          return false;
        }
        return true;
      },
      [completion](bool success) {
        if (!success) completion->Cancel();
        completion->Count(success ? absl::StatusCode::kOk : absl::StatusCode::kCancelled);
      });
}

}  // namespace sinkserve::server::http
