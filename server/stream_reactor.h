// StreamReactor: a server-streaming gRPC callback reactor fed from another thread (the
// scheduler), following docs/conventions.md §7:
//   - Send/Close never block: messages are queued; one write is in flight at a time and the
//     next one starts from OnWriteDone. When the client reads slower than the engine produces,
//     queued messages are merged (Merge), so the backlog stays one message deep.
//   - OnCancel and a failed write both cancel the engine request (RequestControl).
//   - Finish is called exactly once, after the queue drains; `delete this` only in OnDone.
//   - gRPC is never called with the mutex held (a reaction may run inline).
// The engine side (an observer owned by the scheduler) keeps a raw pointer to the reactor:
// that is safe because Finish, and so OnDone, only follow Close, which is the observer's last
// call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>

#include "engine/serving/scheduler.h"
#include "server/request_parsing.h"

namespace sinkserve::server {

template <typename Response>
class StreamReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  StreamReactor() : start_(std::chrono::steady_clock::now()) {}

  // Queues a message (thread-safe). Dropped once the stream is broken or finishing.
  void Send(Response message) {
    std::unique_lock lock(mutex_);
    if (close_requested_ || broken_) return;
    if (queue_.empty() || !Merge(queue_.back(), message)) queue_.push_back(std::move(message));
    Pump(std::move(lock));
  }

  // Finishes the stream with `status` once the queued messages are written (thread-safe; the
  // first call wins).
  void Close(grpc::Status status) {
    std::unique_lock lock(mutex_);
    if (close_requested_) return;
    close_requested_ = true;
    status_ = std::move(status);
    Pump(std::move(lock));
  }

  // The engine request to cancel when the client goes away.
  void SetControl(std::shared_ptr<RequestControl> control) {
    std::unique_lock lock(mutex_);
    control_ = control;
    const bool cancel = client_gone_;
    lock.unlock();
    if (cancel) control->Cancel();
  }

  std::chrono::steady_clock::time_point start() const { return start_; }

 protected:
  // Merges `next` into `queued` (an unwritten message) when the two can be one; false keeps
  // them apart.
  virtual bool Merge(Response& queued, Response& next) { return false; }
  // Called once from OnDone, before the reactor is deleted, with the status sent.
  virtual void Done(const grpc::Status& status) {}

 private:
  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mutex_);
    writing_ = false;
    if (!ok) {
      // The client is gone: stop the engine work; the observer's Close still ends the call.
      broken_ = true;
      client_gone_ = true;
      std::shared_ptr<RequestControl> control = control_;
      lock.unlock();
      if (control) control->Cancel();
      lock.lock();
    }
    Pump(std::move(lock));
  }

  void OnCancel() override {
    std::unique_lock lock(mutex_);
    client_gone_ = true;
    std::shared_ptr<RequestControl> control = control_;
    lock.unlock();
    if (control) control->Cancel();
  }

  void OnDone() override {
    Done(status_);
    delete this;
  }

  // With the mutex held: starts the next write, or the finish once everything is written.
  void Pump(std::unique_lock<std::mutex> lock) {
    if (writing_ || finishing_) return;
    if (!queue_.empty() && !broken_) {
      buffer_ = SerializeResponse(queue_.front());
      queue_.pop_front();
      writing_ = true;
      lock.unlock();
      StartWrite(&buffer_);
      return;
    }
    if (close_requested_) {
      finishing_ = true;
      const grpc::Status status = status_;
      lock.unlock();
      Finish(status);
    }
  }

  const std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
  std::deque<Response> queue_;      // not yet written
  grpc::ByteBuffer buffer_;         // the write in flight
  bool writing_ = false;
  bool close_requested_ = false;
  bool finishing_ = false;
  bool broken_ = false;             // a write failed: nothing more is written
  bool client_gone_ = false;        // cancelled or broken
  grpc::Status status_;
  std::shared_ptr<RequestControl> control_;
};

}  // namespace sinkserve::server
