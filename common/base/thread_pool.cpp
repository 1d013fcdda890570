#include "common/base/thread_pool.h"

#include <sched.h>

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sinkserve {
namespace {

// Idle workers spin ~50-100 µs before sleeping: long enough to bridge the gap between two
// loops of a decode step, short enough not to burn a core while the engine is idle.
constexpr int kWorkerSpins = 2000;
// The caller waiting for claimed chunks yields its core after this many spins, so a
// descheduled worker can finish its chunk.
constexpr int kCallerSpins = 200;
constexpr int64_t kMaxChunks = (int64_t{1} << 24) - 1;

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

constexpr uint64_t Pack(uint16_t loop, int64_t chunks, int64_t next) {
  return (uint64_t{loop} << 48) | (static_cast<uint64_t>(chunks) << 24) |
         static_cast<uint64_t>(next);
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  num_threads_ = std::max(1, num_threads);
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  Wake();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::Wake() {
  wake_.fetch_add(1);  // seq_cst, ordered before the sleepers_ load (pairs with WorkerLoop)
  if (sleepers_.load() > 0) {
    // Taking the mutex orders this notify after a sleeper's last check of wake_.
    { std::lock_guard<std::mutex> lock(wake_mutex_); }
    wake_cv_.notify_all();
  }
}

void ThreadPool::RunChunks(int thread_index) {
  uint64_t claim = claim_.load(std::memory_order_acquire);
  while (true) {
    const int64_t chunks = static_cast<int64_t>((claim >> 24) & kMaxChunks);
    const int64_t next = static_cast<int64_t>(claim & kMaxChunks);
    if (next >= chunks) return;
    if (!claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;  // `claim` was reloaded: another thread took a chunk, or a new loop began
    }
    const int64_t begin = next * grain_;
    (*body_)(begin, std::min(n_, begin + grain_), thread_index);
    chunks_done_.fetch_add(1, std::memory_order_acq_rel);
    claim = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain, const Body& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t chunks = (n + grain - 1) / grain;
  if (chunks > kMaxChunks) {
    grain = (n + kMaxChunks - 1) / kMaxChunks;
    chunks = (n + grain - 1) / grain;
  }
  if (num_threads_ == 1 || chunks == 1) {
    body(0, n, 0);
    return;
  }
  body_ = &body;
  n_ = n;
  grain_ = grain;
  chunks_done_.store(0, std::memory_order_relaxed);
  claim_.store(Pack(++loop_id_, chunks, 0), std::memory_order_release);
  Wake();

  RunChunks(0);
  for (int spin = 0; chunks_done_.load(std::memory_order_acquire) != chunks; ++spin) {
    if (spin < kCallerSpins) {
      CpuRelax();
    } else {
      sched_yield();
    }
  }
}

void ThreadPool::WorkerLoop(int thread_index) {
  // Not wake_.load(): the thread may start after loops (or the destructor) already bumped it.
  uint64_t seen = 0;
  while (true) {
    uint64_t current = wake_.load(std::memory_order_acquire);
    for (int spin = 0; current == seen; ++spin) {
      if (spin < kWorkerSpins) {
        CpuRelax();
      } else {
        std::unique_lock<std::mutex> lock(wake_mutex_);
        sleepers_.fetch_add(1);  // seq_cst, before re-reading wake_ (pairs with Wake)
        wake_cv_.wait(lock, [&] { return wake_.load() != seen || stop_.load(); });
        sleepers_.fetch_sub(1);
      }
      current = wake_.load(std::memory_order_acquire);
    }
    seen = current;
    if (stop_.load()) return;
    RunChunks(thread_index);
  }
}

}  // namespace sinkserve
