// libFuzzer target for request handling on the server: the raw-method parser (ParseRequest,
// with its wire-format walk that names a field holding invalid UTF-8) and RequestValidator,
// on arbitrary bytes, against the demo model. The first byte picks the message type; 4 is the
// JSON body of the OpenAI-compatible POST /v1/completions (and /v1/chat/completions,
// /tokenize, /detokenize), parsed by server/http/openai_request.h and then validated as the
// HTTP server does.
// Promises checked: parsing and validation never crash; every refusal is INVALID_ARGUMENT or
// OUT_OF_RANGE with a message; an accepted Generate/Score holds only valid token ids within
// the limits.
//
//   ./request_fuzz -max_total_time=60 corpus-work tests/fuzz/corpus/request_fuzz
#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "engine/model.h"
#include "server/http/openai_request.h"
#include "server/request_parsing.h"
#include "server/validation.h"
#include "sinkserve/v1/sinkserve.pb.h"

namespace {

namespace v1 = sinkserve::v1;
using sinkserve::server::RequestValidator;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "request_fuzz: violated: %s\n", what);
    std::abort();
  }
}

struct Engine {
  std::unique_ptr<sinkserve::Model> model;
  std::unique_ptr<RequestValidator> validator;
};

const Engine& Get() {
  static const Engine* engine = [] {
    auto model = sinkserve::Model::Load(sinkserve::ModelOptions{"demo", 1});
    Check(model.ok(), "the demo model loads");
    auto* loaded = new Engine{std::move(*model), nullptr};
    sinkserve::server::RequestLimits limits;
    limits.max_prompt_tokens = 512;  // small limits, so that the fuzzer reaches them
    limits.max_new_tokens = 64;
    limits.default_max_new_tokens = 32;  // as `serve` clamps it: at most max_new_tokens
    limits.max_score_tokens = 512;
    loaded->validator = std::make_unique<RequestValidator>(*loaded->model, limits);
    return loaded;
  }();
  return *engine;
}

void CheckRefusal(const absl::Status& status) {
  Check(status.code() == absl::StatusCode::kInvalidArgument ||
            status.code() == absl::StatusCode::kOutOfRange,
        "refusals are INVALID_ARGUMENT or OUT_OF_RANGE");
  Check(!status.message().empty(), "refusals say why");
}

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message* message) {
  grpc::Slice slice(data, size);
  const grpc::ByteBuffer buffer(&slice, 1);
  const grpc::Status status = sinkserve::server::ParseRequest(buffer, message);
  if (!status.ok()) {
    Check(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT,
          "parse errors are INVALID_ARGUMENT");
    Check(!status.error_message().empty(), "parse errors say why");
  }
  return status.ok();
}

void CheckIds(const std::vector<int32_t>& ids, int limit) {
  Check(static_cast<int>(ids.size()) <= limit, "token limit");
  for (const int32_t id : ids) {
    Check(id >= 0 && id < Get().model->config().vocab_size, "valid token ids");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Engine& engine = Get();
  const RequestValidator& validator = *engine.validator;
  const uint8_t kind = data[0] % 5;
  ++data;
  --size;
  switch (kind) {
    case 0: {
      v1::GenerateRequest request;
      if (!Parse(data, size, &request)) return 0;
      auto spec = validator.Generate(request);
      if (!spec.ok()) return CheckRefusal(spec.status()), 0;
      CheckIds(spec->prompt, validator.limits().max_prompt_tokens);
      CheckIds(spec->stop_token_ids, validator.limits().max_stop_token_ids + 1);
      Check(spec->max_new_tokens >= 0 && spec->max_new_tokens <= validator.limits().max_new_tokens,
            "max_new_tokens within the limit");
      return 0;
    }
    case 1: {
      v1::ScoreRequest request;
      if (!Parse(data, size, &request)) return 0;
      auto spec = validator.Score(request);
      if (!spec.ok()) return CheckRefusal(spec.status()), 0;
      CheckIds(spec->tokens, validator.limits().max_score_tokens);
      return 0;
    }
    case 2: {
      v1::CreateSessionRequest request;
      if (!Parse(data, size, &request)) return 0;
      auto policy =
          validator.Policy(request.has_cache_policy(), request.cache_policy(), "cache_policy");
      if (!policy.ok()) CheckRefusal(policy.status());
      auto sampling = validator.Sampling(request.sampling_defaults(), "sampling_defaults");
      if (!sampling.ok()) CheckRefusal(sampling.status());
      return 0;
    }
    case 4: {
      namespace http = sinkserve::server::http;
      const std::string_view body(reinterpret_cast<const char*>(data), size);
      (void)http::ParseTokenizeRequest(body);
      (void)http::ParseDetokenizeRequest(body);
      if (auto chat = http::ParseChatRequest(body); !chat.ok()) {
        CheckRefusal(chat.status());
      } else {
        Check(chat->messages.is_array() && !chat->messages.empty() &&
                  chat->completion.prompts.size() == 1,
              "a chat request holds messages and one prompt");
      }
      auto request = http::ParseCompletionRequest(body);
      if (!request.ok()) return CheckRefusal(request.status()), 0;
      Check(!request->prompts.empty() &&
                request->prompts.size() * static_cast<size_t>(request->n) <= http::kMaxChoices,
            "1 to kMaxChoices choices");
      Check(request->logprobs >= -1 && request->logprobs <= http::kMaxTopLogprobs,
            "logprobs within OpenAI's limit");
      for (const v1::GenerateRequest& prompt : request->prompts) {
        auto spec = validator.Generate(prompt);
        if (!spec.ok()) {
          CheckRefusal(http::ToOpenAiNames(spec.status()));
          continue;
        }
        CheckIds(spec->prompt, validator.limits().max_prompt_tokens);
      }
      return 0;
    }
    default: {
      v1::GetSessionRequest request;
      if (!Parse(data, size, &request)) return 0;
      if (absl::Status status = validator.SessionId(request.session_id()); !status.ok()) {
        CheckRefusal(status);
      }
      return 0;
    }
  }
}
