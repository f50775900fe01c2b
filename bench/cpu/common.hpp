// What every CPU benchmark shares: inputs made once per process, the reference rates (Eigen's
// float GEMM and the memory bandwidth, measured in the same process) and the timing loop that sets
// the counters. See reference_rates_bench.cpp for the counters and how to run the suite.
#pragma once

#include <benchmark/benchmark.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "lcsm/core/tensor.hpp"
namespace lcsm::bench {

using lcsm::index_t;
using Clock = std::chrono::steady_clock;

constexpr index_t kDim = 128;   // K = V
constexpr index_t kChunk = 64;  // C
constexpr int kThreads = 2;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---------------------------------------------------------------------------------------------
// Inputs: N(0, 1) floats (Box-Muller over splitmix64), made once and shared by every benchmark
// (each benchmark views a prefix), so that the largest shapes do not spend seconds in a slow RNG.

inline void fill_normal(float* x, std::size_t n, std::uint64_t seed) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&s] {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const double two_pi = 6.283185307179586;
  for (std::size_t i = 0; i < n; i += 2) {
    const std::uint64_t r = next();
    const double u1 = (static_cast<double>(r >> 40) + 1.0) * 0x1.0p-24;  // (0, 1]
    const double u2 = static_cast<double>(r & 0xFFFFFF) * 0x1.0p-24;     // [0, 1)
    const double rad = std::sqrt(-2.0 * std::log(u1));
    x[i] = static_cast<float>(rad * std::cos(two_pi * u2));
    if (i + 1 < n) x[i + 1] = static_cast<float>(rad * std::sin(two_pi * u2));
  }
}

// Float buffers aligned to 64 bytes, as framework tensors are (std::vector's large blocks sit 16 bytes
// past a page, which splits every 512-byte row over 9 cache lines). With LCSM_BENCH_HUGEPAGES=1 in
// the environment they are 2 MiB aligned and madvise(MADV_HUGEPAGE)d, so that transparent huge
// pages back them where the kernel allows it (THP "madvise" mode, as on this machine): the default
// is plain 4 KiB pages, what a framework's allocator gets unless it asks.
inline bool huge_pages() {
  static const bool on = [] {
    const char* e = std::getenv("LCSM_BENCH_HUGEPAGES");
    return e && std::atoi(e) != 0;
  }();
  return on;
}

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) : n_(n) {
    const std::size_t align = huge_pages() ? std::size_t{2} << 20 : 64;
    const std::size_t bytes = (std::max<std::size_t>(n, 1) * sizeof(float) + align - 1) / align * align;
    p_.reset(static_cast<float*>(std::aligned_alloc(align, bytes)));
    if (!p_) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE)
    if (huge_pages()) madvise(p_.get(), bytes, MADV_HUGEPAGE);
#endif
    std::memset(p_.get(), 0, bytes);  // first touch here, not in a timed loop
  }
  float* data() { return p_.get(); }
  const float* data() const { return p_.get(); }
  std::size_t size() const { return n_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> p_;
  std::size_t n_ = 0;
};

struct Inputs {
  Buffer q, k, v, d_o;
};

// Large enough for the largest shape: B = 1, T = 64K, H = 16, D = 128 (512 MiB per tensor).
inline const Inputs& inputs() {
  static const Inputs in = [] {
    const std::size_t n = std::size_t{65536} * 16 * kDim;
    Inputs r;
    Buffer* all[] = {&r.q, &r.k, &r.v, &r.d_o};
    std::vector<std::thread> workers;
    for (int i = 0; i < 4; ++i)
      workers.emplace_back([&, i] {
        *all[i] = Buffer(n);
        fill_normal(all[i]->data(), n, 1000 + i);
      });
    for (auto& w : workers) w.join();
    return r;
  }();
  return in;
}

// ---------------------------------------------------------------------------------------------
// Reference rates, measured once per process (on first use) so that every fraction in one run
// divides by numbers from the same run.
//
// GEMM: Eigen's matrix product threads only through OpenMP, and the library (and this binary)
// does not use OpenMP: lcsm runs one Eigen product per std::thread. So the 2-thread GEMM rate is
// measured the way lcsm uses the cores: two independent 2048^3 float GEMMs (each 2 * 2048^3 FLOP)
// running concurrently on two std::threads, total FLOP over the wall time of the pair. That is the
// rate both cores really sustain on Eigen's kernel together (including the shared L3 and memory
// bus), not twice a one-core number. The best of 8 pairs after a warm-up pair: other work on a
// shared machine only ever slows a run down, so the best is the least disturbed (and the largest
// denominator, so the fractions err low).
//
// Copy: a 256 MiB buffer (8x the 32 MiB L3) split in two halves copied concurrently by two threads;
// bytes = read + written = 2 * 256 MiB; the best of 10 after a warm-up. Two ways, and the better one
// is the copy bandwidth: std::memcpy, and a loop of streaming (non-temporal) stores (glibc's memcpy
// does not stream at this size here and is slower). A decode step does not copy, though: it reads
// its state and writes it back in place, which needs no read-for-ownership and no second buffer,
// and on this machine moves more bytes per second than any copy. So the in-place update of a 256 MiB
// buffer (x *= 0.999, the same split) is measured too: decode reports frac_bw against the copy, as
// asked, and frac_update against the in-place update, the tight bound for its traffic.

struct GemmOperands {
  Eigen::MatrixXf a, b, c;
  explicit GemmOperands(index_t n, std::uint64_t seed) : a(n, n), b(n, n), c(n, n) {
    fill_normal(a.data(), a.size(), seed);
    fill_normal(b.data(), b.size(), seed + 1);
    c.setZero();
  }
  void run() { c.noalias() = a * b; }
};

inline constexpr index_t kGemmN = 2048;
constexpr double kGemmFlop = 2.0 * kGemmN * kGemmN * kGemmN;

// Runs f(worker) on `threads` threads concurrently (the caller is worker 0).
template <class F>
inline void concurrently(int threads, F&& f) {
  std::vector<std::thread> pool;
  for (int w = 1; w < threads; ++w) pool.emplace_back([&f, w] { f(w); });
  f(0);
  for (auto& t : pool) t.join();
}

// Copies (or updates in place) a buffer split in `threads` parts, one per thread.
enum class CopyKind { memcpy_, stream, update };

inline void copy_part(CopyKind kind, float* dst, const float* src, std::size_t n) {
  if (kind == CopyKind::memcpy_) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  if (kind == CopyKind::update) {  // x = 0.999 x in place: what a decode step does to its state
    for (std::size_t i = 0; i < n; ++i) dst[i] *= 0.999f;
    return;
  }
  // Streaming (non-temporal) stores: a good large copy, no read-for-ownership. They need aligned
  // destinations: plain stores up to the first 64-byte boundary.
  std::size_t i = 0;
  for (; i < n && reinterpret_cast<std::uintptr_t>(dst + i) % 64 != 0; ++i) dst[i] = src[i];
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#elif defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#elif defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

struct CopyBuffers {
  std::size_t count;  // floats
  Buffer src, dst;
  explicit CopyBuffers(std::size_t bytes) : count(bytes / sizeof(float)), src(count), dst(count) {
    std::fill(src.data(), src.data() + count, 1.0f);
  }
  void run(CopyKind kind, int threads) {
    concurrently(threads, [&](int w) {
      const std::size_t part = count / threads / 16 * 16, begin = part * w;
      copy_part(kind, dst.data() + begin, src.data() + begin, w + 1 == threads ? count - begin : part);
    });
  }
};

constexpr std::size_t kCopyBytes = std::size_t{256} << 20;

inline double best(const std::vector<double>& x) { return *std::max_element(x.begin(), x.end()); }

struct ReferenceRates {
  double gemm_flops;    // FLOP/s, two concurrent single-threaded Eigen GEMMs
  double copy_bytes;    // bytes/s, read + written, two threads: the better of memcpy and a streaming copy
  double update_bytes;  // bytes/s, read + written, two threads updating a buffer in place
};

// Measured on first use, then raised to any better rate that the GEMM and copy benchmarks (which
// run first) measure later in the same process, with the same 2 threads: on a shared machine the
// best rate seen is the least disturbed one.
inline ReferenceRates& reference_rates() {
  static ReferenceRates rates = [] {
    ReferenceRates r{};
    {
      std::vector<std::unique_ptr<GemmOperands>> ops;
      for (int w = 0; w < kThreads; ++w) ops.push_back(std::make_unique<GemmOperands>(kGemmN, 7 + 2 * w));
      std::vector<double> rate;
      for (int rep = 0; rep < 9; ++rep) {
        const auto t0 = Clock::now();
        concurrently(kThreads, [&](int w) { ops[w]->run(); });
        if (rep > 0) rate.push_back(kThreads * kGemmFlop / seconds_since(t0));
      }
      r.gemm_flops = best(rate);
    }
    {
      CopyBuffers buf(kCopyBytes);
      auto measure = [&](CopyKind kind) {
        std::vector<double> rate;
        for (int rep = 0; rep < 11; ++rep) {
          const auto t0 = Clock::now();
          buf.run(kind, kThreads);
          if (rep > 0) rate.push_back(2.0 * kCopyBytes / seconds_since(t0));
        }
        return best(rate);
      };
      r.copy_bytes = std::max(measure(CopyKind::memcpy_), measure(CopyKind::stream));
      r.update_bytes = measure(CopyKind::update);
    }
    return r;
  }();
  return rates;
}

// Rate counters in decimal units.
inline benchmark::Counter rate(double per_iteration) {
  return benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                            benchmark::Counter::OneK::kIs1000);
}

struct Work {
  double tokens, flop, bytes;  // per iteration
};

// Times `body` with the benchmark's loop and sets the counters; frac_gemm and frac_bw divide the
// rates of this same loop (wall-clock seconds measured here, the same span as the real time the
// library reports) by the reference rates.
enum Report { kGemm = 1, kBandwidth = 2 };

// Returns the seconds per iteration.
template <class Body>
inline double timed(benchmark::State& state, const Work& w, int report, Body&& body) {
  const ReferenceRates ref = reference_rates();  // before this benchmark can raise it
  body();                                        // warm-up: first touch of the outputs, thread start-up
  const auto t0 = Clock::now();
  for (auto _ : state) body();
  const double secs = seconds_since(t0), iters = static_cast<double>(state.iterations());
  if (w.tokens > 0) state.counters["tokens_per_second"] = rate(w.tokens);
  if (w.flop > 0) state.counters["flops"] = rate(w.flop);
  state.counters["bytes_per_second"] = rate(w.bytes);
  if (report & kGemm) state.counters["frac_gemm"] = w.flop * iters / secs / ref.gemm_flops;
  if (report & kBandwidth) {
    state.counters["frac_bw"] = w.bytes * iters / secs / ref.copy_bytes;
    state.counters["frac_update"] = w.bytes * iters / secs / ref.update_bytes;
  }
  return secs / iters;
}

}  // namespace lcsm::bench
