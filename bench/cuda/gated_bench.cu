// CUDA gated-recurrence benchmarks: the scalar gate ([B, T, H] fp32) and the vector gate
// ([B, T, H, K] fp32), forward in both precisions and decode, with the counters of common.cuh.
// bytes/s counts q, k, v read once, o written once and the gate read once. Gates are fla's test
// gates, log-sigmoid(N(0, 1)) / 16; the _steep entries use log-sigmoid(N(0, 1)) - 3 (a per-token
// decay of e^-3 or more: the vector gate's chunks then all take the elementwise diagonal path).
// BM_vector_gate_passes times the vector gate's launches one by one (the sm_90a kernel's).
#include "common.cuh"

namespace {

using namespace lcsm_bench;

// A descriptor over a gate buffer: scalar [B, T, H] or vector [B, T, H, D].
template <class E>
lcsm::ScalarGatedAttention<E> gated_op(std::integral_constant<bool, false>, const float* g, std::int64_t B,
                                       std::int64_t T, std::int64_t H, std::int64_t) {
  lcsm::ScalarGatedAttention<E> op;
  op.log_gate = lcsm::view(g, {B, T, H});
  return op;
}
template <class E>
lcsm::VectorGatedAttention<E> gated_op(std::integral_constant<bool, true>, const float* g, std::int64_t B,
                                       std::int64_t T, std::int64_t H, std::int64_t D) {
  lcsm::VectorGatedAttention<E> op;
  op.log_gate = lcsm::view(g, {B, T, H, D});
  return op;
}

template <class E, bool kVector, bool kExact = true, bool kSteep = false>
void BM_gated_forward(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = 128;
  const std::int64_t n = B * T * H * D, gates = B * T * H * (kVector ? D : 1);
  Buffer q(n * sizeof(E)), k(n * sizeof(E)), v(n * sizeof(E)), o(n * sizeof(E)), g(gates * 4);
  for (void* p : {q.p, k.p, v.p}) fill_inputs<E>(p, n, 1234);
  fill_gates<kSteep><<<2048, 256>>>(static_cast<float*>(g.p), gates, 99);
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  auto op = gated_op<E>(std::integral_constant<bool, kVector>{}, static_cast<const float*>(g.p), B, T, H, D);
  op.precision = kExact ? lcsm::Precision::exact : lcsm::Precision::fast;
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, T, H, D}); };
  const auto qv = view(q.p), kv = view(k.p), vv = view(v.p), ov = view(o.p);
  const std::size_t ws_bytes = lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv);
  Buffer ws(ws_bytes);
  lcsm::cuda::Device dev{nullptr, {ws.p, ws_bytes}};
  const double median = run_timed(state, [&] { lcsm::forward<E>(dev, op, qv, kv, vv, ov); });
  forward_counters(state, median, static_cast<double>(B * T), static_cast<double>(H), 4.0 * n * sizeof(E) + 4.0 * gates,
                   D);
}

template <bool kVector>
void BM_gated_decode(benchmark::State& state) {
  using T = __nv_bfloat16;
  const std::int64_t B = state.range(0), H = 16, D = 128, gates = B * H * (kVector ? D : 1);
  Buffer q(B * H * D * 2), k(B * H * D * 2), v(B * H * D * 2), o(B * H * D * 2), s(B * H * D * D * 4), g(gates * 4);
  for (void* p : {q.p, k.p, v.p}) fill_inputs<T>(p, B * H * D, 7);
  fill_gates<><<<256, 256>>>(static_cast<float*>(g.p), gates, 5);
  LCSM_CUDA_CHECK(cudaMemset(s.p, 0, B * H * D * D * 4));
  const auto op = gated_op<T>(std::integral_constant<bool, kVector>{}, static_cast<const float*>(g.p), B, 1, H, D);
  auto view = [&](void* p) { return lcsm::view(static_cast<T*>(p), {B, 1, H, D}); };
  const auto sv = lcsm::view(static_cast<float*>(s.p), {B, H, D, D});
  const double median = run_timed(
      state, [&] { lcsm::step<T>(lcsm::cuda::Device{}, op, view(q.p), view(k.p), view(v.p), view(o.p), sv); });
  const double bytes = 2.0 * B * H * D * D * 4 + 4.0 * B * H * D * 2 + 4.0 * gates;
  bandwidth_counters(state, median, bytes);
}

// The vector gate's launches one by one at K = 128 (bf16, the sm_90a kernels; fla's test gates):
// the segment deltas, the scan, the outputs and the mma.sync fallback behind them (which finds no
// flagged CTA here), each timed by its own events after an L2 flush (as BM_forward_passes).
template <bool kExact>
void BM_vector_gate_passes(benchmark::State& state) {
  using E = __nv_bfloat16;
  namespace d = lcsm::cuda::detail;
  const std::int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = 128, n = B * T * H * D;
  Buffer q(n * 2), k(n * 2), v(n * 2), o(n * 2), g(n * 4);
  for (void* p : {q.p, k.p, v.p}) fill_inputs<E>(p, n, 1234);
  fill_gates<><<<2048, 256>>>(static_cast<float*>(g.p), n, 99);
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  auto op = gated_op<E>(std::true_type{}, static_cast<const float*>(g.p), B, T, H, D);
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, T, H, D}); };
  const auto qv = view(q.p), kv = view(k.p), vv = view(v.p), ov = view(o.p);
  const std::size_t ws_bytes = lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv);
  Buffer ws(ws_bytes);
  const lcsm::cuda::Device dev{nullptr, {ws.p, ws_bytes}};
  const lcsm::detail::ProblemShape shape{B, T, H, D, D, B};
  const auto plan = d::plan_forward<d::DecayKind::key>(shape, false);
  auto params = d::make_params<E>(qv, kv, vv, ov, op.scale_for(D), shape);
  d::set_gate(params, op.log_gate);
  d::set_plan(params, plan, dev);
  if (!d::sm90_path<E, d::DecayKind::key>(params, dev.kernels)) {
    state.SkipWithError("needs the sm_90a kernels (a Hopper GPU and an sm_90a build)");
    return;
  }
  // Events: deltas from 0 to 1, the scan from 1 to 2, the outputs from 2 to 3, the fallback to 4.
  const auto [delta, scan, out, fallback] = time_launch_gaps<5>(state, plan.split ? 0 : 2, [&](cudaEvent_t* ev) {
    d::run_segments<d::DecayKind::key>(params, plan, nullptr, d::ForwardPhase::all, [&](auto delta_only) {
      constexpr bool kDelta = decltype(delta_only)::value;
      LCSM_CUDA_CHECK(cudaEventRecord(ev[kDelta ? 0 : 2]));
      d::launch_sm90<d::DecayKind::key, kExact, kDelta>(params, plan.max_items, nullptr);
      LCSM_CUDA_CHECK(cudaEventRecord(ev[kDelta ? 1 : 3]));
      if constexpr (!kDelta) {
        d::launch_key_gate_fallback<kExact>(params, plan.max_items, nullptr);
        LCSM_CUDA_CHECK(cudaEventRecord(ev[4]));
      }
    });
  });
  const double bytes = 4.0 * n * 2 + 4.0 * n;  // q, k, v, o and the gate
  state.counters["delta_ms"] = delta * 1e3;
  state.counters["scan_ms"] = scan * 1e3;
  state.counters["output_ms"] = out * 1e3;
  state.counters["fallback_ms"] = fallback * 1e3;
  state.counters["output_frac_copy"] = bytes / out / copy_bandwidth();
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "T", "H"});
  for (std::int64_t T : {4096, 16384, 65536, 262144, 1 << 20}) b->Args({1, T, 16});
  b->Args({8, 8192, 16});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_gated_forward, __nv_bfloat16, false)->Name("BM_scalar_gate_forward<bf16>")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_gated_forward, __nv_bfloat16, false, false)
    ->Name("BM_scalar_gate_forward_fast<bf16>")
    ->Apply(shapes);
BENCHMARK_TEMPLATE(BM_gated_forward, __nv_bfloat16, true)->Name("BM_vector_gate_forward<bf16>")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_gated_forward, __nv_bfloat16, true, false)
    ->Name("BM_vector_gate_forward_fast<bf16>")
    ->Apply(shapes);
BENCHMARK_TEMPLATE(BM_gated_forward, __nv_bfloat16, false, true, true)
    ->Name("BM_scalar_gate_forward_steep<bf16>")
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 65536, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_gated_forward, __nv_bfloat16, true, true, true)
    ->Name("BM_vector_gate_forward_steep<bf16>")
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 65536, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_vector_gate_passes, true)
    ->Name("BM_vector_gate_passes<bf16>")
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 65536, 16})
    ->Args({1, 1 << 20, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_vector_gate_passes, false)
    ->Name("BM_vector_gate_passes_fast<bf16>")
    ->ArgNames({"B", "T", "H"})
    ->Args({1, 65536, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_gated_decode, false)
    ->Name("BM_scalar_gate_decode")
    ->ArgNames({"B"})
    ->Arg(64)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_gated_decode, true)
    ->Name("BM_vector_gate_decode")
    ->ArgNames({"B"})
    ->Arg(64)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
