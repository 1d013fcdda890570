#include "server/http/completion_run.h"

#include <condition_variable>
#include <future>
#include <mutex>

namespace sinkserve::server::http {
namespace {

constexpr char kClientApi[] = "openai";  // the api label of the requests' metrics

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

CompletionRun::CompletionRun() : state_(std::make_shared<State>()) {}

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
  state_->changed.wait(lock, [&] {
    if (!state_->refusal.ok()) return true;
    for (size_t i = 0; i < controls_.size(); ++i) {
      if (!state_->admitted[i]) return false;
    }
    return true;
  });
  absl::Status refusal = state_->refusal;
  lock.unlock();
  if (!refusal.ok()) Cancel();
  return refusal;
}

std::vector<CompletionRun::Event> CompletionRun::Take() {
  std::unique_lock lock(state_->mutex);
  state_->changed.wait(lock, [&] { return !state_->events.empty() || state_->running == 0; });
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
    if (result.status.ok()) {
      done_.set_value(std::move(logprobs_));
    } else {
      done_.set_value(result.status);
    }
  }
  std::future<absl::StatusOr<PromptLogprobs>> future() { return done_.get_future(); }

 private:
  PromptLogprobs logprobs_;
  std::promise<absl::StatusOr<PromptLogprobs>> done_;
};

}  // namespace

absl::StatusOr<PromptLogprobs> ScorePrompt(Scheduler& scheduler, ScoreSpec spec) {
  spec.client_api = kClientApi;
  spec.return_token_nll = true;
  spec.progress_interval_tokens = 1 << 30;  // one event at the end
  auto observer = std::make_shared<PromptScore>();
  std::future<absl::StatusOr<PromptLogprobs>> done = observer->future();
  absl::StatusOr<std::shared_ptr<RequestControl>> control =
      scheduler.Submit(std::move(spec), observer);
  if (!control.ok()) return control.status();
  return done.get();
}

}  // namespace sinkserve::server::http
