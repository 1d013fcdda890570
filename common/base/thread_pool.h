// ThreadPool: a fixed set of threads that run one parallel loop at a time.
//
// A decode step runs ~6 parallel loops per layer, so a loop must start and finish in
// microseconds. Work is handed out in chunks from one atomic counter: whoever is running takes
// the next chunk, so a worker that the OS has descheduled (a busy machine) delays the loop by
// at most the chunk it holds — the caller, thread 0, simply does the rest. Idle workers spin
// briefly, then sleep on a condition variable. (Not std::atomic::wait: libstdc++ 12's
// implementation for 64-bit atomics lost wake-ups here and deadlocked the destructor.)
// Not re-entrant: one owner thread calls ParallelFor (the engine's scheduler thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sinkserve {

class ThreadPool {
 public:
  // num_threads counts the caller; 0 picks std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return num_threads_; }

  using Body = std::function<void(int64_t begin, int64_t end, int thread_index)>;

  // Calls body(begin, end, thread_index) for chunks of `grain` items covering [0, n) exactly
  // once, spread over the threads; returns when all are done. thread_index < size() lets the
  // body use per-thread scratch.
  void ParallelFor(int64_t n, int64_t grain, const Body& body);

 private:
  void WorkerLoop(int thread_index);
  void Wake();  // starts the workers on the current loop (or on stopping)
  // Takes and runs chunks of the current loop until none is left.
  void RunChunks(int thread_index);

  int num_threads_;
  std::vector<std::thread> workers_;

  // The current loop; read by a worker only after it has claimed one of its chunks (the loop
  // cannot finish, and so cannot be replaced, while a chunk is claimed but not done).
  const Body* body_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  // Packed (loop id:16 | chunk count:24 | next chunk:24): one CAS claims a chunk of the right
  // loop, so a worker waking late can never run a chunk of a newer loop with an old body.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> chunks_done_{0};
  uint16_t loop_id_ = 0;

  std::atomic<uint64_t> wake_{0};   // bumped to start a loop (or to stop)
  std::atomic<int> sleepers_{0};    // workers asleep on wake_cv_ (skip the notify when none)
  std::atomic<bool> stop_{false};
  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
};

}  // namespace sinkserve
