// CUDA lightning attention benchmarks (Google Benchmark, manual timing with CUDA events; common.cuh).
// Counters are decimal: bytes/s counts q, k, v read once and o written once (decode: the fp32
// state read and written), frac_copy the fraction of the device-to-device copy bandwidth measured
// in this same process, FLOP/s counts 4 C K + 4 K V per token and head (C = 64). BM_forward_passes
// times the forward's launches one by one (where the time goes, issue 11).
#include "common.cuh"

namespace {

using namespace lcsm_bench;

// A forward's inputs (filled), output, descriptor and workspace at the benchmark's (B, T, H), D = 128.
template <class E>
struct LightningProblem {
  std::int64_t B, T, H, D = 128, n;
  Buffer q, k, v, o;
  lcsm::LightningAttention op;
  lcsm::View<E, 4> qv, kv, vv, ov;
  std::size_t ws_bytes;
  Buffer ws;
  LightningProblem(const benchmark::State& state, bool exact)
      : B(state.range(0)), T(state.range(1)), H(state.range(2)), n(B * T * H * D), q(bytes_of_one()), k(bytes_of_one()),
        v(bytes_of_one()), o(bytes_of_one()), op(descriptor(H, exact)), qv(view(q)), kv(view(k)), vv(view(v)),
        ov(view(o)), ws_bytes(lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv)), ws(ws_bytes) {
    for (void* p : {q.p, k.p, v.p}) fill_inputs<E>(p, n, 1234);
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  }
  static lcsm::LightningAttention descriptor(std::int64_t heads, bool exact) {
    lcsm::LightningAttention op;
    op.log_decay = lcsm::decay::minimax(static_cast<int>(heads), 0, 80);
    op.precision = exact ? lcsm::Precision::exact : lcsm::Precision::fast;
    return op;
  }
  std::size_t bytes_of_one() const { return static_cast<std::size_t>(n) * sizeof(E); }
  lcsm::View<E, 4> view(const Buffer& b) const { return lcsm::view(static_cast<E*>(b.p), {B, T, H, D}); }
  lcsm::cuda::Device device() const { return {nullptr, {ws.p, ws_bytes}}; }
  double bytes() const { return 4.0 * bytes_of_one(); }  // q, k, v read, o written
};

template <class E, bool kExact = true>
void BM_forward(benchmark::State& state) {
  LightningProblem<E> x(state, kExact);
  const double median = run_timed(state, [&] { lcsm::forward<E>(x.device(), x.op, x.qv, x.kv, x.vv, x.ov); });
  forward_counters(state, median, static_cast<double>(x.B * x.T), static_cast<double>(x.H), x.bytes(), x.D);
}

// The forward's launches one by one (bf16, the sm_90a kernels): the segment deltas, the scan and the
// outputs, each timed by its own events after an L2 flush; the iteration time is their sum.
// Counters: each launch's median and its fraction of the copy bandwidth for the bytes it must move
// (deltas: k and v of every segment but a sequence's last; outputs: q, k, v and o).
template <bool kExact>
void BM_forward_passes(benchmark::State& state) {
  using E = __nv_bfloat16;
  namespace d = lcsm::cuda::detail;
  LightningProblem<E> x(state, kExact);
  const lcsm::cuda::Device dev = x.device();
  const lcsm::detail::ProblemShape shape{x.B, x.T, x.H, x.D, x.D, x.B};
  const auto plan = d::plan_forward<d::DecayKind::head>(shape, false);
  auto params = d::make_params<E>(x.qv, x.kv, x.vv, x.ov, x.op.scale_for(x.D), shape);
  d::set_head_decay(params, x.op.log_decay);
  d::set_plan(params, plan, dev);
  if (!d::sm90_path<E, d::DecayKind::head>(params, dev.kernels)) {
    state.SkipWithError("needs the sm_90a kernels (a Hopper GPU and an sm_90a build)");
    return;
  }
  // Events: deltas from 0 to 1, the scan from 1 to 2, the outputs from 2 to 3.
  const auto [delta, scan, out] = time_launch_gaps<4>(state, plan.split ? 0 : 2, [&](cudaEvent_t* ev) {
    d::run_segments<d::DecayKind::head>(params, plan, nullptr, d::ForwardPhase::all, [&](auto delta_only) {
      constexpr bool kDelta = decltype(delta_only)::value;
      LCSM_CUDA_CHECK(cudaEventRecord(ev[kDelta ? 0 : 2]));
      d::launch_sm90<d::DecayKind::head, kExact, kDelta>(params, plan.max_items, nullptr);
      LCSM_CUDA_CHECK(cudaEventRecord(ev[kDelta ? 1 : 3]));
    });
  });
  const double bw = copy_bandwidth();
  const double delta_bytes = plan.split ? 0.5 * x.bytes() * (plan.segments_per_seq - 1) / plan.segments_per_seq : 0;
  state.counters["delta_ms"] = delta * 1e3;
  state.counters["scan_ms"] = scan * 1e3;
  state.counters["output_ms"] = out * 1e3;
  state.counters["delta_frac_copy"] = delta > 0 ? delta_bytes / delta / bw : 0.0;
  state.counters["output_frac_copy"] = x.bytes() / out / bw;
  state.counters["frac_copy"] = x.bytes() / (delta + scan + out) / bw;
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
static void pass_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "T", "H"})->Args({1, 65536, 16})->Args({1, 1 << 20, 16})->Args({8, 8192, 16});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK_TEMPLATE(BM_forward_passes, true)->Name("BM_forward_passes<bf16>")->Apply(pass_shapes);
BENCHMARK_TEMPLATE(BM_forward_passes, false)->Name("BM_forward_passes_fast<bf16>")->Apply(pass_shapes);
// scripts/gpu_ab.sh builds this file alone with LCSM_BENCH_BF16_ONLY: the sm_90a kernels' A/B builds
// compile in a minute without the mma.sync instances of the other types.
#ifndef LCSM_BENCH_BF16_ONLY
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
#endif
BENCHMARK(BM_decode)->ArgNames({"B"})->Arg(64)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
