#include "client/load_generator.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/openai_client.h"

namespace sinkserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Milliseconds(Clock::duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

// 64 random bits in hex, not from the run's seed: two runs with one seed on one server must
// not name their sessions alike.
std::string RandomRunId() {
  std::random_device device;
  return absl::StrFormat("%08x%08x", device(), device());
}

// A conversation between turns: which one, which turn comes next, its session ("" for one
// request). The client names the session: every call sends the id as x-session-id metadata, so
// nginx's affinity keeps the conversation on one replica, where the first turn creates it.
struct Conversation {
  int id = 0;
  int turn = 0;
  std::string session_id;
};

// A finished request, handed from a gRPC thread to the driver thread.
struct Finished {
  Conversation conversation;
  RequestRecord record;
};

// Everything one run shares between the driver thread and gRPC's callback threads: a queue of
// finished requests and a count of outstanding CloseSession calls, under one mutex. All other
// state belongs to the driver thread alone.
class Mailbox {
 public:
  void Post(Finished finished) {
    std::lock_guard lock(mutex_);
    finished_.push_back(std::move(finished));
    wake_.notify_one();
  }
  void CloseStarted() {
    std::lock_guard lock(mutex_);
    ++closes_;
  }
  void CloseDone() {
    std::lock_guard lock(mutex_);
    --closes_;
    wake_.notify_one();
  }
  // Waits until something finished or `until`; returns what finished.
  std::deque<Finished> Take(Clock::time_point until) {
    std::unique_lock lock(mutex_);
    wake_.wait_until(lock, until, [&] { return !finished_.empty(); });
    return std::exchange(finished_, {});
  }
  void WaitForCloses() {
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [&] { return closes_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Finished> finished_;
  int closes_ = 0;
};

// A request's record before it is sent.
RequestRecord NewRecord(const Conversation& conversation, const v1::GenerateRequest& request,
                        Clock::time_point sent, Clock::time_point run_start) {
  RequestRecord record;
  record.conversation = conversation.id;
  record.turn = conversation.turn;
  record.start_s = std::chrono::duration<double>(sent - run_start).count();
  record.prompt_tokens = request.prompt_token_ids_size();
  return record;
}

// One Generate stream. Reactions never block: they time the messages and post the record.
class GenerateCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateCall(const Connection& connection, Mailbox& mailbox, Conversation conversation,
               v1::GenerateRequest request, double timeout_s, Clock::time_point run_start)
      : mailbox_(mailbox), conversation_(std::move(conversation)), request_(std::move(request)) {
    connection.Prepare(context_, conversation_.session_id);
    sent_ = Clock::now();
    // gRPC deadlines are system_clock time points.
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(timeout_s)));
    record_ = NewRecord(conversation_, request_, sent_, run_start);
  }

  void Start(v1::Sinkserve::Stub& stub) {
    stub.async()->Generate(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // end of stream: OnDone follows
    const Clock::time_point now = Clock::now();
    if (response_.token_ids_size() > 0) {
      if (record_.output_tokens == 0) {
        first_token_ = now;
        record_.ttft_ms = Milliseconds(now - sent_);
      } else {
        record_.itl_ms.push_back(Milliseconds(now - last_token_));
      }
      last_token_ = now;
      record_.output_tokens += response_.token_ids_size();
    }
    if (!response_.session_id().empty()) conversation_.session_id = response_.session_id();
    if (response_.has_result()) record_.server_result = response_.result();
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    record_.e2e_ms = Milliseconds(Clock::now() - sent_);
    if (record_.output_tokens > 1) {
      record_.tpot_ms = Milliseconds(last_token_ - first_token_) / (record_.output_tokens - 1);
    }
    record_.code = status.error_code();
    record_.error = status.error_message();
    // Destroy the call (its ClientContext) before the driver hears of it: once the driver has
    // every record it may return and its caller may destroy the channel, which must not race
    // with this call's last unref (it did: a gRPC ref-count assertion at the end of a run).
    Mailbox& mailbox = mailbox_;
    Finished finished{std::move(conversation_), std::move(record_)};
    delete this;
    mailbox.Post(std::move(finished));
  }

 private:
  Mailbox& mailbox_;
  Conversation conversation_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  grpc::ClientContext context_;
  RequestRecord record_;
  Clock::time_point sent_, first_token_, last_token_;
};

// Closes a conversation's session when it ends, so that sessions do not pile up on the server
// until their TTL. Asynchronous: the driver never waits on the server's scheduler.
void CloseSession(const Connection& connection, Mailbox& mailbox, const std::string& session_id) {
  struct Call {
    grpc::ClientContext context;
    v1::CloseSessionRequest request;
    v1::Session response;
  };
  auto* call = new Call;
  call->request.set_session_id(session_id);
  connection.Prepare(call->context, session_id);
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  mailbox.CloseStarted();
  connection.stub->async()->CloseSession(&call->context, &call->request, &call->response,
                                         [call, &mailbox](const grpc::Status&) {
                                           delete call;
                                           mailbox.CloseDone();
                                         });
}

class Driver {
 public:
  // Over gRPC (`connection`) or the OpenAI API (`openai`): one of them is set.
  Driver(const Connection* connection, OpenAiClient* openai, PromptSource& prompts,
         const LoadOptions& options, const ProgressCallback& progress)
      : connection_(connection),
        openai_(openai),
        prompts_(prompts),
        options_(options),
        progress_(progress),
        random_(options.seed),
        run_id_(RandomRunId()) {}

  LoadResult Run() {
    const bool open_loop = options_.rate > 0;
    start_ = Clock::now();
    Clock::time_point next_arrival = start_;
    // Mean gap 1 / rate whatever the shape (vLLM's burstiness); unused in the closed loop.
    std::gamma_distribution<double> gap(
        options_.burstiness, open_loop ? 1.0 / (options_.rate * options_.burstiness) : 1.0);
    if (!open_loop) {
      for (int i = 0; i < options_.concurrency && MayStartConversation(); ++i) StartConversation();
    }
    while (true) {
      if (open_loop) {
        while (MayStartConversation() && Clock::now() >= next_arrival) {
          StartConversation();
          next_arrival += std::chrono::duration_cast<Clock::duration>(
              std::chrono::duration<double>(gap(random_)));
        }
      }
      if (!MayStartConversation() && conversations_in_flight_ == 0) break;
      // Wake for the next arrival, else at least every 100 ms (duration limit, progress).
      Clock::time_point until = Clock::now() + std::chrono::milliseconds(100);
      if (open_loop && MayStartConversation()) until = std::min(until, next_arrival);
      for (Finished& finished : mailbox_.Take(until)) OnFinished(std::move(finished));
      if (progress_) progress_(result_, Elapsed());
    }
    mailbox_.WaitForCloses();
    result_.duration_s = last_completion_s_;
    return std::move(result_);
  }

 private:
  double Elapsed() const {
    return std::chrono::duration<double>(Clock::now() - start_).count();
  }

  bool MayStartConversation() const {
    return result_.aborted.empty() &&
           (options_.conversations <= 0 || conversations_started_ < options_.conversations) &&
           (options_.duration_s <= 0 || Elapsed() < options_.duration_s);
  }

  void StartConversation() {
    ++conversations_started_;
    ++conversations_in_flight_;
    Conversation conversation;
    conversation.id = conversations_started_ - 1;
    if (options_.turns > 1) {
      conversation.session_id = absl::StrCat("bench-", run_id_, "-", conversation.id);
    }
    StartTurn(std::move(conversation));
  }

  void StartTurn(Conversation conversation) {
    v1::GenerateRequest request;
    for (uint32_t id : prompts_.Next()) request.add_prompt_token_ids(id);
    request.set_max_new_tokens(static_cast<uint32_t>(options_.max_new_tokens));
    request.set_ignore_eos(options_.ignore_eos);
    request.mutable_sampling()->set_temperature(static_cast<float>(options_.temperature));
    if (options_.temperature > 0) request.mutable_sampling()->set_seed(random_());
    if (conversation.turn == 0) {
      if (options_.cache_policy) *request.mutable_cache_policy() = *options_.cache_policy;
      request.set_keep_session(!conversation.session_id.empty());
    } else {
      request.set_session_id(conversation.session_id);
    }
    if (openai_ != nullptr) {
      RequestRecord record = NewRecord(conversation, request, Clock::now(), start_);
      openai_->Start(request, options_.request_timeout_s, std::move(record),
                     [mailbox = &mailbox_, conversation = std::move(conversation)](
                         RequestRecord record, std::string session_id) mutable {
                       if (!session_id.empty()) conversation.session_id = std::move(session_id);
                       mailbox->Post(Finished{std::move(conversation), std::move(record)});
                     });
      return;
    }
    auto* call = new GenerateCall(*connection_, mailbox_, std::move(conversation),
                                  std::move(request), options_.request_timeout_s, start_);
    call->Start(*connection_->stub);
  }

  void OnFinished(Finished finished) {
    const RequestRecord& record = finished.record;
    last_completion_s_ = Elapsed();
    if (record.code == grpc::StatusCode::UNAVAILABLE && result_.aborted.empty()) {
      // The server is gone or draining: every further request would fail the same way.
      result_.aborted = absl::StrCat("the server became unavailable (", record.error, ") after ",
                                     result_.records.size(), " completed requests");
    }
    const bool next_turn = record.code == grpc::StatusCode::OK &&
                           finished.conversation.turn + 1 < options_.turns &&
                           result_.aborted.empty();
    result_.records.push_back(std::move(finished.record));
    Conversation conversation = std::move(finished.conversation);
    if (next_turn) {
      ++conversation.turn;
      StartTurn(std::move(conversation));
      return;
    }
    if (!conversation.session_id.empty() && result_.aborted.empty() && connection_ != nullptr) {
      CloseSession(*connection_, mailbox_, conversation.session_id);
    }
    --conversations_in_flight_;
    if (options_.rate <= 0 && MayStartConversation()) StartConversation();
  }

  const Connection* connection_;
  OpenAiClient* openai_;
  PromptSource& prompts_;
  const LoadOptions& options_;
  const ProgressCallback& progress_;
  std::mt19937_64 random_;
  const std::string run_id_;  // random: names this run's sessions apart from any other run's
  Mailbox mailbox_;
  Clock::time_point start_;
  int conversations_started_ = 0;
  int conversations_in_flight_ = 0;
  double last_completion_s_ = 0;
  LoadResult result_;
};

}  // namespace

LoadResult RunLoad(const Connection& connection, PromptSource& prompts, const LoadOptions& options,
                   const ProgressCallback& progress) {
  return Driver(&connection, nullptr, prompts, options, progress).Run();
}

LoadResult RunLoad(OpenAiClient& client, PromptSource& prompts, const LoadOptions& options,
                   const ProgressCallback& progress) {
  return Driver(nullptr, &client, prompts, options, progress).Run();
}

}  // namespace sinkserve::bench
