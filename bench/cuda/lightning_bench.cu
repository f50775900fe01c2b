// CUDA lightning attention benchmarks (Google Benchmark, manual timing with CUDA events).
// Every timed call follows an L2 flush (a 256 MB memset); the reported time is the median over
// the iterations. Counters are decimal: bytes/s counts q, k, v read once and o written once
// (decode: the fp32 state read and written), frac_copy the fraction of the device-to-device copy
// bandwidth measured in this same process, FLOP/s counts 4 C K + 4 K V per token and head (C = 64).
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lcsm/cuda.cuh"

namespace {

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

__global__ void fill_random(std::uint16_t* bits, std::int64_t n, float scale, bool bf16, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint64_t x = (static_cast<std::uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float u = (static_cast<float>(x >> 40) / 16777216.0f - 0.5f) * 3.4641f * scale;  // variance scale^2
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

// Times fn() once per benchmark iteration (after an L2 flush), reports the median.
template <class Fn>
double run_timed(benchmark::State& state, Fn&& fn) {
  static L2Flush flush;
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
  std::sort(times.begin(), times.end());
  return times.empty() ? 0 : times[times.size() / 2];
}

// Device-to-device copy bandwidth (bytes read + written), measured once per process.
double copy_bandwidth() {
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
    std::sort(t.begin(), t.end());
    return 2.0 * bytes / (t[t.size() / 2] * 1e-3);
  }();
  return bw;
}

void BM_copy_bandwidth(benchmark::State& state) {
  for (auto _ : state) state.SetIterationTime(1e-3);
  state.counters["bytes_per_second"] =
      benchmark::Counter(copy_bandwidth(), benchmark::Counter::kDefaults, benchmark::Counter::OneK::kIs1000);
}

template <class E, bool kExact = true>
void BM_forward(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = 128;
  const std::int64_t n = B * T * H * D;
  Buffer q(n * sizeof(E)), k(n * sizeof(E)), v(n * sizeof(E)), o(n * sizeof(E));
  if constexpr (sizeof(E) == 2) {
    for (void* p : {q.p, k.p, v.p})
      fill_random<<<2048, 256>>>(static_cast<std::uint16_t*>(p), n, 1.0f, std::is_same_v<E, __nv_bfloat16>, 1234);
  } else {
    // float inputs: the bf16 generator into half the buffer would not do; write bit patterns of N(0,1)-ish floats.
    std::vector<float> host(n);
    for (std::int64_t i = 0; i < n; ++i) host[i] = std::sin(0.1f * static_cast<float>(i % 10007)) * 1.7f;
    for (void* p : {q.p, k.p, v.p}) LCSM_CUDA_CHECK(cudaMemcpy(p, host.data(), n * 4, cudaMemcpyHostToDevice));
  }
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  lcsm::LightningAttention op;
  op.log_decay = lcsm::decay::minimax(static_cast<int>(H), 0, 80);
  op.precision = kExact ? lcsm::LightningAttention::Precision::exact : lcsm::LightningAttention::Precision::fast;
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, T, H, D}); };
  const auto qv = view(q.p), kv = view(k.p), vv = view(v.p), ov = view(o.p);
  Buffer ws(lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv));
  lcsm::cuda::Device dev{nullptr, {ws.p, lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv)}};
  const double median = run_timed(state, [&] { lcsm::forward<E>(dev, op, qv, kv, vv, ov); });
  const double bytes = 4.0 * n * sizeof(E), flops = static_cast<double>(B * T * H) * (4.0 * 64 * D + 4.0 * D * D);
  using C = benchmark::Counter;
  state.counters["median_ms"] = median * 1e3;
  state.counters["bytes_per_second"] = C(bytes / median, C::kDefaults, C::OneK::kIs1000);
  state.counters["flop_per_second"] = C(flops / median, C::kDefaults, C::OneK::kIs1000);
  state.counters["tokens_per_second"] = C(static_cast<double>(B * T) / median, C::kDefaults, C::OneK::kIs1000);
  state.counters["frac_copy"] = bytes / median / copy_bandwidth();
}

void BM_decode(benchmark::State& state) {
  using T = __nv_bfloat16;
  const std::int64_t B = state.range(0), H = 16, D = 128;
  Buffer q(B * H * D * 2), k(B * H * D * 2), v(B * H * D * 2), o(B * H * D * 2), s(B * H * D * D * 4);
  for (void* p : {q.p, k.p, v.p}) fill_random<<<256, 256>>>(static_cast<std::uint16_t*>(p), B * H * D, 1.0f, true, 7);
  LCSM_CUDA_CHECK(cudaMemset(s.p, 0, B * H * D * D * 4));
  lcsm::LightningAttention op;
  op.log_decay = lcsm::decay::minimax(static_cast<int>(H), 0, 80);
  auto view = [&](void* p) { return lcsm::view(static_cast<T*>(p), {B, 1, H, D}); };
  const auto sv = lcsm::view(static_cast<float*>(s.p), {B, H, D, D});
  const double median = run_timed(
      state, [&] { lcsm::step<T>(lcsm::cuda::Device{}, op, view(q.p), view(k.p), view(v.p), view(o.p), sv); });
  const double bytes = 2.0 * B * H * D * D * 4 + 4.0 * B * H * D * 2;
  using C = benchmark::Counter;
  state.counters["median_ms"] = median * 1e3;
  state.counters["bytes_per_second"] = C(bytes / median, C::kDefaults, C::OneK::kIs1000);
  state.counters["frac_copy"] = bytes / median / copy_bandwidth();
}

}  // namespace

BENCHMARK(BM_copy_bandwidth)->UseManualTime()->Iterations(1);
BENCHMARK_TEMPLATE(BM_forward, __nv_bfloat16)
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 4096, 16})
    ->Args({1, 16384, 16})
    ->Args({1, 65536, 16})
    ->Args({1, 262144, 16})
    ->Args({1, 1 << 20, 16})
    ->Args({8, 8192, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_forward, __nv_bfloat16, false)
    ->Name("BM_forward_fast<__nv_bfloat16>")
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 65536, 16})
    ->Args({1, 1 << 20, 16})
    ->Args({8, 8192, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_forward, __half)
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 65536, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_forward, float)
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 65536, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_decode)->ArgNames({"B"})->Arg(64)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
