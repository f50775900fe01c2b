// `run`: lcsm's own CPU backend on a problem, through the public API only (lcsm/lcsm.hpp), timed
// warm: one untimed call first (page faults of fresh outputs, thread start-up), then `repeats`
// timed calls. float64 problems run in double, every other dtype in float with the outputs rounded
// to the problem's dtype (the CPU backend has no 16-bit arithmetic).
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

#include "problem.hpp"

namespace lcsm::ref {

class Stopwatch {
 public:
  explicit Stopwatch(int repeats) : repeats_(std::max(repeats, 1)) {}

  // reset() restores the inputs a call consumes (a decode state advanced in place), untimed.
  template <class Reset, class Call>
  void measure(Reset&& reset, Call&& call) {
    reset();
    call();  // warm-up
    for (int r = 0; r < repeats_; ++r) {
      reset();
      const auto t0 = std::chrono::steady_clock::now();
      call();
      seconds_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  template <class Call>
  void measure(Call&& call) {
    measure([] {}, call);
  }
  double median() const {
    std::vector<double> s = seconds_;
    std::sort(s.begin(), s.end());
    return s.empty() ? 0 : s[s.size() / 2];
  }
  int repeats() const { return repeats_; }

 private:
  int repeats_;
  std::vector<double> seconds_;
};

// The problem's outputs as lcsm's CPU backend computes them (names and shapes of problem.outputs).
std::vector<Tensor64> run_cpu(const Problem& problem, int threads, Stopwatch& watch);

std::vector<Tensor64> run_lightning_cpu(const Problem& problem, int threads, Stopwatch& watch);
std::vector<Tensor64> run_gated_cpu(const Problem& problem, int threads, Stopwatch& watch);
std::vector<Tensor64> run_cosformer_cpu(const Problem& problem, int threads, Stopwatch& watch);
std::vector<Tensor64> run_toeplitz_cpu(const Problem& problem, int threads, Stopwatch& watch);

// Helpers for the runners: an input's values as T, an output tensor from T values rounded to the
// precision the output is judged in.
template <class T>
std::vector<T> values_as(const Tensor64& t) {
  return std::vector<T>(t.values.begin(), t.values.end());
}
template <class T>
Tensor64 output_from(const Expected& e, const std::vector<T>& values) {
  Tensor64 out = e.reference;
  for (std::size_t i = 0; i < values.size(); ++i)
    out.values[i] = test::round_to(e.dtype, static_cast<double>(values[i]));
  return out;
}

}  // namespace lcsm::ref
