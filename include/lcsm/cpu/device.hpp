// The CPU backend's device handle, its fork-join parallel loop and the workers' own scratch.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "lcsm/core/tensor.hpp"

namespace lcsm::cpu {

// Where and how wide CPU work runs. threads <= 0 means std::thread::hardware_concurrency(); more
// than max_threads are capped at max_threads (a call never spawns or sizes scratch for more).
struct Device {
  static constexpr int max_threads = 1024;
  int threads = 1;

  int thread_count() const {
    if (threads > 0) return std::min(threads, max_threads);
    return std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, max_threads);
  }
};

// Runs body(item, worker) for item in [0, items) on up to `threads` workers (the caller's thread is
// worker 0). Items are handed out one at a time, so uneven items balance. Rethrows the first
// exception a worker threw.
template <class Body>
void parallel_for(int threads, index_t items, Body&& body) {
  const int workers = static_cast<int>(std::min<index_t>(std::max(threads, 1), items));
  if (workers <= 1) {
    for (index_t i = 0; i < items; ++i) body(i, 0);
    return;
  }
  std::atomic<index_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](int worker) {
    try {
      for (index_t i = next++; i < items; i = next++) body(i, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = items;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

namespace detail {

// One workspace per worker of a parallel_for, made on first use from the constructor's arguments.
template <class Workspace>
class WorkspacePool {
 public:
  template <class... Args>
  explicit WorkspacePool(int workers, Args... args)
      : slots_(static_cast<std::size_t>(std::max(workers, 1))),
        make_([=] { return std::make_unique<Workspace>(args...); }) {}
  Workspace& operator[](int worker) {
    auto& slot = slots_[static_cast<std::size_t>(worker)];
    if (!slot) slot = make_();
    return *slot;
  }

 private:
  std::vector<std::unique_ptr<Workspace>> slots_;
  std::function<std::unique_ptr<Workspace>()> make_;
};

}  // namespace detail

}  // namespace lcsm::cpu
