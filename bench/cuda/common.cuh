// What the CUDA benchmarks share: device buffers, random bf16/fp16 fills, an L2 flush before every
// timed call, CUDA-event timing with the median reported, and the device-to-device copy bandwidth
// measured once per process (the denominator of frac_copy).
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "lcsm/cuda.cuh"

namespace lcsm_bench {

struct Buffer {
  void* p = nullptr;
  explicit Buffer(std::size_t bytes) {
    if (bytes) LCSM_CUDA_CHECK(cudaMalloc(&p, bytes));
  }
  ~Buffer() {
    if (p) cudaFree(p);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// A uniform value of mean 0 and variance 1 for element i, from a counter-based hash (no state).
__device__ __forceinline__ float unit_uniform(std::int64_t i, std::uint64_t seed) {
  std::uint64_t x = (static_cast<std::uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return (static_cast<float>(x >> 40) / 16777216.0f - 0.5f) * 3.4641f;
}

template <int kUnused = 0>
__global__ void fill_random(std::uint16_t* bits, std::int64_t n, float scale, bool bf16, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float u = unit_uniform(i, seed) * scale;  // variance scale^2
    bits[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(u)) : __half_as_ushort(__float2half_rn(u));
  }
}

class L2Flush {
 public:
  L2Flush() : buffer_(256u << 20) {}
  void run(cudaStream_t s) { LCSM_CUDA_CHECK(cudaMemsetAsync(buffer_.p, 0, 256u << 20, s)); }

 private:
  Buffer buffer_;
};

// The median of a sample (0 when empty).
template <class T>
T median_of(std::vector<T> x) {
  std::sort(x.begin(), x.end());
  return x.empty() ? T{} : x[x.size() / 2];
}

// One flush buffer per process, for every timed loop.
inline L2Flush& l2_flush() {
  static L2Flush flush;
  return flush;
}

// Times fn() once per benchmark iteration (after an L2 flush), reports the median.
template <class Fn>
double run_timed(benchmark::State& state, Fn&& fn) {
  L2Flush& flush = l2_flush();
  cudaEvent_t a, b;
  LCSM_CUDA_CHECK(cudaEventCreate(&a));
  LCSM_CUDA_CHECK(cudaEventCreate(&b));
  fn();  // warm-up
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> times;
  for (auto _ : state) {
    flush.run(nullptr);
    LCSM_CUDA_CHECK(cudaEventRecord(a));
    fn();
    LCSM_CUDA_CHECK(cudaEventRecord(b));
    LCSM_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LCSM_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    state.SetIterationTime(ms * 1e-3);
    times.push_back(ms * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median_of(std::move(times));
}

// A run of several launches timed one by one: run(ev) records the events ev[first..kEvents) around
// its launches (those before `first`, launches a shape skips, stay unrecorded and count 0). Once per
// iteration after an L2 flush; the iteration time is the whole span. Returns each gap's median
// (seconds): gap i lies between ev[i] and ev[i + 1].
template <int kEvents, class Run>
std::array<double, kEvents - 1> time_launch_gaps(benchmark::State& state, int first, Run&& run) {
  L2Flush& flush = l2_flush();
  cudaEvent_t ev[kEvents];
  for (auto& e : ev) LCSM_CUDA_CHECK(cudaEventCreate(&e));
  run(ev);  // warm-up
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  std::array<std::vector<double>, kEvents - 1> gaps;
  for (auto _ : state) {
    flush.run(nullptr);
    run(ev);
    LCSM_CUDA_CHECK(cudaEventSynchronize(ev[kEvents - 1]));
    double total = 0;
    for (int i = 0; i + 1 < kEvents; ++i) {
      float ms = 0;
      if (i >= first) LCSM_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]));
      gaps[i].push_back(ms * 1e-3);
      total += ms * 1e-3;
    }
    state.SetIterationTime(total);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::array<double, kEvents - 1> medians{};
  for (int i = 0; i + 1 < kEvents; ++i) medians[i] = median_of(gaps[i]);
  return medians;
}

// Device-to-device copy bandwidth (bytes read + written), measured once per process.
inline double copy_bandwidth() {
  static const double bw = [] {
    const std::size_t bytes = std::size_t(2) << 30;
    Buffer x(bytes), y(bytes);
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    std::vector<float> t;
    for (int i = 0; i < 8; ++i) {
      cudaEventRecord(a);
      cudaMemcpyAsync(y.p, x.p, bytes, cudaMemcpyDeviceToDevice);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms;
      cudaEventElapsedTime(&ms, a, b);
      t.push_back(ms);
    }
    return 2.0 * bytes / (median_of(std::move(t)) * 1e-3);
  }();
  return bw;
}

inline void BM_copy_bandwidth(benchmark::State& state) {
  for (auto _ : state) state.SetIterationTime(1e-3);
  state.counters["bytes_per_second"] =
      benchmark::Counter(copy_bandwidth(), benchmark::Counter::kDefaults, benchmark::Counter::OneK::kIs1000);
}

// Fills n elements of E with values of variance 1 (16-bit types on the device, float on the host).
template <class E>
void fill_inputs(void* p, std::int64_t n, std::uint64_t seed) {
  if constexpr (sizeof(E) == 2) {
    fill_random<><<<2048, 256>>>(static_cast<std::uint16_t*>(p), n, 1.0f, std::is_same_v<E, __nv_bfloat16>, seed);
  } else {
    std::vector<float> host(n);
    for (std::int64_t i = 0; i < n; ++i) host[i] = std::sin(0.1f * static_cast<float>((i + seed) % 10007)) * 1.7f;
    LCSM_CUDA_CHECK(cudaMemcpy(p, host.data(), n * 4, cudaMemcpyHostToDevice));
  }
}

// Log-gates as fla's tests draw them, log-sigmoid(N(0, 1)) / 16, or log-sigmoid(N(0, 1)) - 3 (kSteep:
// a per-token decay of e^-3 or more), from a counter-based hash of the index.
template <bool kSteep = false>
__global__ void fill_gates(float* g, std::int64_t n, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float u = unit_uniform(i, seed);
    g[i] = kSteep ? -log1pf(expf(-u)) - 3.0f : -log1pf(expf(-u)) / 16.0f;
  }
}

// The counters every benchmark reports: median time, bytes/s and the fraction of the copy bandwidth.
inline void bandwidth_counters(benchmark::State& state, double median, double bytes) {
  using C = benchmark::Counter;
  state.counters["median_ms"] = median * 1e3;
  state.counters["bytes_per_second"] = C(bytes / median, C::kDefaults, C::OneK::kIs1000);
  state.counters["frac_copy"] = bytes / median / copy_bandwidth();
}

// The counters of a forward: bytes/s of q, k, v read once and o written once (plus the gate),
// FLOP/s at 4 C K + 4 K V per token and head (C = 64), tokens/s, fraction of the copy bandwidth.
inline void forward_counters(benchmark::State& state, double median, double tokens, double heads, double bytes, int D) {
  using C = benchmark::Counter;
  const double flops = tokens * heads * (4.0 * 64 * D + 4.0 * D * D);
  bandwidth_counters(state, median, bytes);
  state.counters["flop_per_second"] = C(flops / median, C::kDefaults, C::OneK::kIs1000);
  state.counters["tokens_per_second"] = C(tokens / median, C::kDefaults, C::OneK::kIs1000);
}

}  // namespace lcsm_bench
