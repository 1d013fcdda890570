// ThreadPool: a fixed set of threads that run one parallel region at a time.
//
// A decode step runs ~6 parallel regions per layer, so a region must start and finish in
// microseconds: workers spin briefly on an atomic generation counter before sleeping on it
// (futex via std::atomic::wait), and the calling thread takes part as thread 0.
// Not re-entrant: one owner thread calls Run() (the engine's scheduler thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
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

  // Calls task(thread_index, num_threads) once on every thread and returns when all are done.
  void Run(const std::function<void(int thread_index, int num_threads)>& task);

  // Splits [0, n) into size() contiguous chunks, multiples of `grain` where possible, and
  // calls body(begin, end) for each non-empty chunk.
  void ParallelFor(int64_t n, int64_t grain,
                   const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  void WorkerLoop(int thread_index);

  int num_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // bumped to start a region
  std::atomic<int> pending_{0};          // workers still running the current region
  std::atomic<bool> stop_{false};
};

}  // namespace sinkserve
