#include "server/http/completion_run.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace sinkserve::server::http {
namespace {

constexpr char kClientApi[] = "openai";  // the api label of the requests' metrics

// How often a waiting HTTP thread looks at its client's connection: well under a decode step.
constexpr auto kClientPoll = std::chrono::milliseconds(5);

// Waits on `changed` (its mutex held by `lock`) until `ready()`, looking at `client` at the start
// (a poll() costs a microsecond: a caller that takes events each step looks each step) and every
// kClientPoll meanwhile. Once it has closed, calls `cancel` (with the lock released) and records
// that in `gone`; the wait goes on, since a cancelled request still ends with its result.
void WaitWatching(std::unique_lock<std::mutex>& lock, std::condition_variable& changed,
                  const std::function<bool()>& ready, const ClientConnection& client, bool& gone,
                  const std::function<void()>& cancel) {
  while (true) {
    if (!gone && client.Closed()) {
      gone = true;
      lock.unlock();
      cancel();
      lock.lock();
    }
    if (changed.wait_for(lock, kClientPoll, ready)) return;
  }
}

}  // namespace

struct CompletionRun::State {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<Event> events;
  std::vector<bool> admitted;  // admitted or ended, per choice
  size_t running = 0;          // choices submitted and not ended
  absl::Status refusal;        // the first choice refused at admission

  void Push(Event event) {
    std::lock_guard lock(mutex);
    const size_t choice = event.choice;
    if (event.session_id || event.result) admitted[choice] = true;
    if (event.result) {
      --running;
      if (event.result->rejected && refusal.ok()) refusal = event.result->status;
    }
    events.push_back(std::move(event));
    changed.notify_all();
  }
};

class CompletionRun::Observer final : public GenerateObserver {
 public:
  Observer(std::shared_ptr<State> state, size_t choice)
      : state_(std::move(state)), choice_(choice) {}
  void OnStarted(const std::string& session_id) override {
    state_->Push(Event{choice_, session_id, std::nullopt, std::nullopt});
  }
  void OnTokens(TokenDelta delta) override {
    state_->Push(Event{choice_, std::nullopt, std::move(delta), std::nullopt});
  }
  void OnFinished(GenerateResult result) override {
    state_->Push(Event{choice_, std::nullopt, std::nullopt, std::move(result)});
  }

 private:
  std::shared_ptr<State> state_;
  size_t choice_;
};

CompletionRun::CompletionRun(ClientConnection client)
    : state_(std::make_shared<State>()), client_(client) {}

CompletionRun::~CompletionRun() { Cancel(); }

absl::Status CompletionRun::Submit(Scheduler& scheduler, std::vector<GenerateSpec> specs) {
  {
    std::lock_guard lock(state_->mutex);
    state_->admitted.assign(specs.size(), false);
  }
  for (size_t choice = 0; choice < specs.size(); ++choice) {
    {
      std::lock_guard lock(state_->mutex);
      ++state_->running;
    }
    specs[choice].client_api = kClientApi;
    absl::StatusOr<std::shared_ptr<RequestControl>> control =
        scheduler.Submit(std::move(specs[choice]), std::make_shared<Observer>(state_, choice));
    if (!control.ok()) {
      {
        std::lock_guard lock(state_->mutex);
        --state_->running;
      }
      Cancel();
      return control.status();
    }
    controls_.push_back(*control);
  }
  return absl::OkStatus();
}

absl::Status CompletionRun::WaitAdmitted() {
  std::unique_lock lock(state_->mutex);
  WaitWatching(
      lock, state_->changed,
      [&] {
        if (!state_->refusal.ok()) return true;
        for (size_t i = 0; i < controls_.size(); ++i) {
          if (!state_->admitted[i]) return false;
        }
        return true;
      },
      client_, client_gone_, [this] { Cancel(); });
  absl::Status refusal = state_->refusal;
  lock.unlock();
  if (!refusal.ok()) Cancel();
  return refusal;
}

std::vector<CompletionRun::Event> CompletionRun::Take() {
  std::unique_lock lock(state_->mutex);
  WaitWatching(
      lock, state_->changed, [&] { return !state_->events.empty() || state_->running == 0; },
      client_, client_gone_, [this] { Cancel(); });
  return std::exchange(state_->events, {});
}

void CompletionRun::Cancel() {
  for (const std::shared_ptr<RequestControl>& control : controls_) control->Cancel();
}

namespace {

class PromptScore final : public ScoreObserver {
 public:
  void OnProgress(ScoreProgress progress) override {
    logprobs_.nll.insert(logprobs_.nll.end(), progress.token_nll.begin(), progress.token_nll.end());
    for (auto& top : progress.top_logprobs) logprobs_.top.push_back(std::move(top));
  }
  void OnFinished(ScoreResult result) override {
    std::lock_guard lock(mutex_);
    if (result.status.ok()) {
      result_ = std::move(logprobs_);
    } else {
      result_ = result.status;
    }
    finished_.notify_all();
  }
  // The result, once finished; a closed `client` cancels `control` meanwhile.
  absl::StatusOr<PromptLogprobs> Wait(RequestControl& control, const ClientConnection& client) {
    std::unique_lock lock(mutex_);
    bool gone = false;
    WaitWatching(
        lock, finished_, [&] { return result_.has_value(); }, client, gone,
        [&] { control.Cancel(); });
    return std::move(*result_);
  }

 private:
  PromptLogprobs logprobs_;
  std::mutex mutex_;
  std::condition_variable finished_;
  std::optional<absl::StatusOr<PromptLogprobs>> result_;
};

}  // namespace

absl::StatusOr<PromptLogprobs> ScorePrompt(Scheduler& scheduler, ScoreSpec spec,
                                           const ClientConnection& client) {
  spec.client_api = kClientApi;
  spec.return_token_nll = true;
  spec.progress_interval_tokens = 1 << 30;  // one event at the end
  auto observer = std::make_shared<PromptScore>();
  absl::StatusOr<std::shared_ptr<RequestControl>> control =
      scheduler.Submit(std::move(spec), observer);
  if (!control.ok()) return control.status();
  return observer->Wait(**control, client);
}

}  // namespace sinkserve::server::http
