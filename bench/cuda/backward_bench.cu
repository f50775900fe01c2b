// CUDA training-step benchmarks: one forward plus one backward call (dq, dk, dv and the decay
// gradient, no states), as a training step runs them, for lightning attention, the scalar gate and
// the vector gate (bf16, B = 1, H = 16, K = V = 128; fla's shapes). bytes/s counts the forward's q, k, v, o and the
// backward's q, k, v, dO read and dq, dk, dv written once (plus the gate and its gradient);
// extra_bytes is the backward's workspace (what it holds beyond inputs and outputs).
#include "common.cuh"

namespace {

using namespace lcsm_bench;

enum class Decay { head, scalar_gate, vector_gate };

template <Decay kDecay>
void BM_training_step(benchmark::State& state) {
  using E = __nv_bfloat16;
  constexpr bool kGate = kDecay != Decay::head;
  const std::int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = 128;
  const std::int64_t n = B * T * H * D;
  const std::int64_t gates = kDecay == Decay::scalar_gate ? B * T * H : kDecay == Decay::vector_gate ? n : 0;
  Buffer q(n * 2), k(n * 2), v(n * 2), o(n * 2), d_o(n * 2), dq(n * 2), dk(n * 2), dv(n * 2), g(gates * 4),
      dg(kGate ? gates * 4 : H * 4);
  for (void* p : {q.p, k.p, v.p, d_o.p}) fill_inputs<E>(p, n, 1234);
  if (kGate) fill_gates<<<2048, 256>>>(static_cast<float*>(g.p), gates, 99);
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  auto view = [&](void* p) { return lcsm::view(static_cast<E*>(p), {B, T, H, D}); };
  const auto qv = view(q.p), kv = view(k.p), vv = view(v.p), ov = view(o.p), dov = view(d_o.p);
  const auto step = [&](const auto& op, auto d_decay) {
    const std::size_t fwd_bytes = lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv);
    const std::size_t bwd_bytes = lcsm::cuda::backward_workspace_bytes<E>(op, qv, vv, {}, d_decay);
    Buffer ws(std::max(fwd_bytes, bwd_bytes));
    const lcsm::cuda::Device dev{nullptr, {ws.p, std::max(fwd_bytes, bwd_bytes)}};
    const double median = run_timed(state, [&] {
      lcsm::forward<E>(dev, op, qv, kv, vv, ov);
      lcsm::backward<E>(dev, op, qv, kv, vv, dov, view(dq.p), view(dk.p), view(dv.p), {}, d_decay);
    });
    using C = benchmark::Counter;
    const double bytes = 11.0 * n * 2 + 3.0 * gates * 4;
    bandwidth_counters(state, median, bytes);
    state.counters["extra_bytes"] = C(static_cast<double>(bwd_bytes), C::kDefaults, C::OneK::kIs1024);
  };
  if constexpr (kDecay == Decay::vector_gate) {
    lcsm::VectorGatedAttention<E> op;
    op.log_gate = lcsm::view(static_cast<const float*>(g.p), {B, T, H, D});
    step(op, lcsm::view(static_cast<float*>(dg.p), {B, T, H, D}));
  } else if constexpr (kGate) {
    lcsm::ScalarGatedAttention<E> op;
    op.log_gate = lcsm::view(static_cast<const float*>(g.p), {B, T, H});
    step(op, lcsm::view(static_cast<float*>(dg.p), {B, T, H}));
  } else {
    lcsm::LightningAttention op;
    op.log_decay = lcsm::decay::minimax(static_cast<int>(H), 0, 80);
    step(op, lcsm::view(static_cast<float*>(dg.p), {H}));
  }
}

// fla's training shapes: B = 1 at T = 4K .. 256K, and B = 8 at T = 8K.
void training_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "T", "H"});
  for (std::int64_t T : {4096, 16384, 65536, 262144}) b->Args({1, T, 16});
  b->Args({8, 8192, 16})->UseManualTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_training_step, Decay::head)->Name("BM_lightning_training_step<bf16>")->Apply(training_shapes);
BENCHMARK_TEMPLATE(BM_training_step, Decay::scalar_gate)
    ->Name("BM_scalar_gate_training_step<bf16>")
    ->Apply(training_shapes);
BENCHMARK_TEMPLATE(BM_training_step, Decay::vector_gate)
    ->Name("BM_vector_gate_training_step<bf16>")
    ->Apply(training_shapes);
