// CUDA lightning attention benchmarks (Google Benchmark, manual timing with CUDA events; common.cuh).
// Counters are decimal: bytes/s counts q, k, v read once and o written once (decode: the fp32
// state read and written), frac_copy the fraction of the device-to-device copy bandwidth measured
// in this same process, FLOP/s counts 4 C K + 4 K V per token and head (C = 64).
#include "common.cuh"

namespace {

using namespace lcsm_bench;

template <class E, bool kExact = true>
void BM_forward(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = 128;
  const std::int64_t n = B * T * H * D;
  Buffer q(n * sizeof(E)), k(n * sizeof(E)), v(n * sizeof(E)), o(n * sizeof(E));
  for (void* p : {q.p, k.p, v.p}) fill_inputs<E>(p, n, 1234);
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  lcsm::LightningAttention op;
  op.log_decay = lcsm::decay::minimax(static_cast<int>(H), 0, 80);
  op.precision = kExact ? lcsm::Precision::exact : lcsm::Precision::fast;
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, T, H, D}); };
  const auto qv = view(q.p), kv = view(k.p), vv = view(v.p), ov = view(o.p);
  const std::size_t ws_bytes = lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv);
  Buffer ws(ws_bytes);
  lcsm::cuda::Device dev{nullptr, {ws.p, ws_bytes}};
  const double median = run_timed(state, [&] { lcsm::forward<E>(dev, op, qv, kv, vv, ov); });
  forward_counters(state, median, static_cast<double>(B * T), static_cast<double>(H), 4.0 * n * sizeof(E), D);
}

void BM_decode(benchmark::State& state) {
  using T = __nv_bfloat16;
  const std::int64_t B = state.range(0), H = 16, D = 128;
  Buffer q(B * H * D * 2), k(B * H * D * 2), v(B * H * D * 2), o(B * H * D * 2), s(B * H * D * D * 4);
  for (void* p : {q.p, k.p, v.p}) fill_inputs<T>(p, B * H * D, 7);
  LCSM_CUDA_CHECK(cudaMemset(s.p, 0, B * H * D * D * 4));
  lcsm::LightningAttention op;
  op.log_decay = lcsm::decay::minimax(static_cast<int>(H), 0, 80);
  auto view = [&](void* p) { return lcsm::view(static_cast<T*>(p), {B, 1, H, D}); };
  const auto sv = lcsm::view(static_cast<float*>(s.p), {B, H, D, D});
  const double median = run_timed(
      state, [&] { lcsm::step<T>(lcsm::cuda::Device{}, op, view(q.p), view(k.p), view(v.p), view(o.p), sv); });
  const double bytes = 2.0 * B * H * D * D * 4 + 4.0 * B * H * D * 2;
  bandwidth_counters(state, median, bytes);
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
    ->Args({1, 16384, 16})
    ->Args({1, 65536, 16})
    ->Args({1, 262144, 16})
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
