// CUDA cosFormer benchmarks: forward causal (both precisions) and non-causal, a training step
// (forward + backward), and decode, with the counters of common.cuh. bytes/s counts q, k, v read
// once and o written once (the training step: also q, k, v, dO read and dq, dk, dv written once by
// the backward; extra_bytes its workspace; decode: the [B, H, 2K, V + 1] state read and written, and
// the token's q, k, v, o). ReLU features, M = T.
#include "common.cuh"

namespace {

using namespace lcsm_bench;

template <bool kCausal, bool kExact = true>
void BM_cosformer_forward(benchmark::State& state) {
  using E = __nv_bfloat16;
  const std::int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = 128;
  const std::int64_t n = B * T * H * D;
  Buffer q(n * sizeof(E)), k(n * sizeof(E)), v(n * sizeof(E)), o(n * sizeof(E));
  for (void* p : {q.p, k.p, v.p}) fill_inputs<E>(p, n, 4321);
  lcsm::CosFormerAttention op;
  op.causal = kCausal;
  op.precision = kExact ? lcsm::Precision::exact : lcsm::Precision::fast;
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, T, H, D}); };
  const auto qv = view(q.p), kv = view(k.p), vv = view(v.p), ov = view(o.p);
  const std::size_t ws_bytes = lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv);
  Buffer ws(ws_bytes);
  lcsm::cuda::Device dev{nullptr, {ws.p, ws_bytes}};
  const double median = run_timed(state, [&] { lcsm::forward<E>(dev, op, qv, kv, vv, ov); });
  forward_counters(state, median, static_cast<double>(B * T), static_cast<double>(H), 4.0 * n * sizeof(E), D);
}

template <bool kCausal, bool kExact = true>
void BM_cosformer_training_step(benchmark::State& state) {
  using E = __nv_bfloat16;
  using C = benchmark::Counter;
  const std::int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = 128;
  const std::int64_t n = B * T * H * D;
  Buffer q(n * 2), k(n * 2), v(n * 2), o(n * 2), d_o(n * 2), dq(n * 2), dk(n * 2), dv(n * 2);
  for (void* p : {q.p, k.p, v.p, d_o.p}) fill_inputs<E>(p, n, 1234);
  lcsm::CosFormerAttention op;
  op.causal = kCausal;
  op.precision = kExact ? lcsm::Precision::exact : lcsm::Precision::fast;
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, T, H, D}); };
  const auto qv = view(q.p), kv = view(k.p), vv = view(v.p), ov = view(o.p), dov = view(d_o.p);
  const std::size_t fwd_bytes = lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv);
  const std::size_t bwd_bytes = lcsm::cuda::backward_workspace_bytes<E>(op, qv, vv);
  Buffer ws(std::max(fwd_bytes, bwd_bytes));
  const lcsm::cuda::Device dev{nullptr, {ws.p, std::max(fwd_bytes, bwd_bytes)}};
  const double median = run_timed(state, [&] {
    lcsm::forward<E>(dev, op, qv, kv, vv, ov);
    lcsm::backward<E>(dev, op, qv, kv, vv, dov, view(dq.p), view(dk.p), view(dv.p));
  });
  bandwidth_counters(state, median, 11.0 * n * 2);
  state.counters["extra_bytes"] = C(static_cast<double>(bwd_bytes), C::kDefaults, C::OneK::kIs1024);
}

void BM_cosformer_decode(benchmark::State& state) {
  using E = __nv_bfloat16;
  const std::int64_t B = state.range(0), H = 16, D = 128, S = B * H * 2 * D * (D + 1);
  Buffer q(B * H * D * 2), k(B * H * D * 2), v(B * H * D * 2), o(B * H * D * 2), s(S * 4), pos(B * 8);
  for (void* p : {q.p, k.p, v.p}) fill_inputs<E>(p, B * H * D, 11);
  LCSM_CUDA_CHECK(cudaMemset(s.p, 0, S * 4));
  LCSM_CUDA_CHECK(cudaMemset(pos.p, 0, B * 8));
  lcsm::CosFormerAttention op;
  op.length = 1 << 20;
  op.positions = lcsm::view(static_cast<const lcsm::index_t*>(pos.p), {B});
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, 1, H, D}); };
  const auto sv = lcsm::view(static_cast<float*>(s.p), {B, H, 2 * D, D + 1});
  const double median = run_timed(
      state, [&] { lcsm::step<E>(lcsm::cuda::Device{}, op, view(q.p), view(k.p), view(v.p), view(o.p), sv); });
  const double bytes = 2.0 * S * 4 + 4.0 * B * H * D * 2;
  bandwidth_counters(state, median, bytes);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "T", "H"});
  for (std::int64_t T : {4096, 16384, 65536, 262144, 1 << 20}) b->Args({1, T, 16});
  b->Args({8, 8192, 16});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

// fla's training shapes: B = 1 at T = 4K .. 256K, and B = 8 at T = 8K.
void training_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "T", "H"});
  for (std::int64_t T : {4096, 16384, 65536, 262144}) b->Args({1, T, 16});
  b->Args({8, 8192, 16})->UseManualTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_cosformer_forward, true)->Name("BM_cosformer_forward<bf16>")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_cosformer_forward, true, false)->Name("BM_cosformer_forward_fast<bf16>")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_cosformer_forward, false)->Name("BM_cosformer_forward_noncausal<bf16>")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_cosformer_training_step, true)->Name("BM_cosformer_training_step<bf16>")->Apply(training_shapes);
BENCHMARK_TEMPLATE(BM_cosformer_training_step, false)
    ->Name("BM_cosformer_training_step_noncausal<bf16>")
    ->Apply(training_shapes);
BENCHMARK_TEMPLATE(BM_cosformer_training_step, true, false)
    ->Name("BM_cosformer_training_step_fast<bf16>")
    ->Apply(training_shapes);
BENCHMARK(BM_cosformer_decode)->ArgNames({"B"})->Arg(64)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
