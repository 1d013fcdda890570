// The engine side of one OpenAI request: its choices (n per prompt) run as Generate requests on
// the scheduler at once, and their events wait in a queue for the HTTP thread, which blocks on
// them (cpp-httplib runs a thread per connection, so blocking there holds up nobody else).
// Scheduler callbacks only lock a mutex for a push: they never block the engine. While it
// waits, the HTTP thread looks at the client's connection every few milliseconds, and cancels
// the request once the client has gone (queued or running, streamed or not).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/serving/scheduler.h"
#include "server/http/client_connection.h"

namespace sinkserve::server::http {

class CompletionRun {
 public:
  struct Event {
    size_t choice = 0;
    std::optional<std::string> session_id;  // the choice was admitted on this session
    std::optional<TokenDelta> delta;        // new tokens
    std::optional<GenerateResult> result;   // the choice ended (its last event)
  };

  // `client`: the connection whose closing cancels the choices (none: never).
  explicit CompletionRun(ClientConnection client = {});
  ~CompletionRun();  // cancels what still runs
  CompletionRun(const CompletionRun&) = delete;
  CompletionRun& operator=(const CompletionRun&) = delete;

  // Submits the choices in order. On a refusal (a full queue, draining) the choices already
  // submitted are cancelled and the refusal returned.
  absl::Status Submit(Scheduler& scheduler, std::vector<GenerateSpec> specs);
  // Waits until every choice was admitted or refused; the first refusal (an unknown or busy
  // session, ...) cancels every choice and is returned.
  absl::Status WaitAdmitted();
  // The events since the last call, waiting for at least one; empty once every choice has
  // ended and its events were taken.
  std::vector<Event> Take();
  // Cancels every choice (thread-safe); each still ends with a result event.
  void Cancel();

 private:
  struct State;
  class Observer;
  std::shared_ptr<State> state_;
  std::vector<std::shared_ptr<RequestControl>> controls_;
  ClientConnection client_;
  bool client_gone_ = false;  // seen closed, and the choices cancelled
};

// The log-probabilities of a prompt's tokens after the first, from the Score path (the same
// arithmetic as the Score RPC), and the `top` most likely tokens at each position.
struct PromptLogprobs {
  std::vector<double> nll;                     // [tokens − 1]
  std::vector<std::vector<TokenLogprob>> top;  // [tokens − 1] when top > 0
};
// Runs `spec` (return_token_nll set here) and waits for it; a closed `client` cancels it.
absl::StatusOr<PromptLogprobs> ScorePrompt(Scheduler& scheduler, ScoreSpec spec,
                                           const ClientConnection& client = {});

}  // namespace sinkserve::server::http
