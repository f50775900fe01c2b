// CPU benchmarks of the gated recurrences (scalar gate: Mamba-2 / simple GLA; vector gate: GLA /
// HGRN2): forward, backward and decode, float, B = 1, K = V = 128, chunk 64 (counters: see
// reference_rates_bench.cpp).
//
// FLOP counts are the nominal ones of lightning_bench.cpp, so that flops and frac_gemm compare
// directly with lightning attention's: forward 4*C*K + 4*K*V per token and head, backward
// 6*C*(K + V) + 10*K*V, decode 4*K*V per head. The gates' own work (exponentials, the vector gate's
// within-sub-chunk products, about (s + 1)*K multiply-adds per token and head for s = 16) is not
// counted. Bytes: q, k, v (and do) read, o (dq, dk, dv) written, the gate read (and its gradient
// written): 4 bytes per token and head for the scalar gate, 4*K for the vector gate.
// Gates: g = -(0.01 + 0.05 |x|), x ~ N(0, 1): per-token decays around 0.95, as a trained GLA has.
#include "cpu/common.hpp"
#include "lcsm/lcsm.hpp"

namespace {

using namespace lcsm::bench;

// Log-gates for the largest shape, [1, 64K, 16, 128] (the scalar gate uses a [1, T, H] prefix).
const Buffer& gates() {
  static const Buffer g = [] {
    Buffer b(std::size_t{65536} * 16 * kDim);
    fill_normal(b.data(), b.size(), 77);
    for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = -(0.01f + 0.05f * std::fabs(b.data()[i]));
    return b;
  }();
  return g;
}

enum class Gate { scalar, vector };

// The gate view and its width (1 or K) for [B, T, H].
struct Ops {
  lcsm::ScalarGatedAttention<float> scalar;
  lcsm::VectorGatedAttention<float> vector;
  Ops(Gate kind, index_t B, index_t T, index_t H) {
    const float* g = gates().data();
    if (kind == Gate::scalar) scalar.log_gate = lcsm::view(g, {B, T, H});
    else vector.log_gate = lcsm::view(g, {B, T, H, kDim});
    scalar.chunk = vector.chunk = kChunk;
  }
};

template <Gate kind>
void BM_GateForward(benchmark::State& state) {
  const index_t H = state.range(0), T = state.range(1), B = 1, K = kDim, V = kDim;
  const int threads = static_cast<int>(state.range(2));
  const Inputs& in = inputs();
  Buffer o(static_cast<std::size_t>(B * T * H * V));
  const Ops ops(kind, B, T, H);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, T, H, K}), k = lcsm::view(in.k.data(), {B, T, H, K});
  const auto v = lcsm::view(in.v.data(), {B, T, H, V});
  const auto out = lcsm::view(o.data(), {B, T, H, V});
  const double th = static_cast<double>(B * T * H), gw = kind == Gate::scalar ? 1 : K;
  const Work w{static_cast<double>(B * T), th * (4.0 * kChunk * K + 4.0 * K * V), th * 4.0 * (2 * K + 2 * V + gw)};
  timed(state, w, kGemm, [&] {
    if constexpr (kind == Gate::scalar) lcsm::forward<float>(dev, ops.scalar, q, k, v, out);
    else lcsm::forward<float>(dev, ops.vector, q, k, v, out);
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  });
}

template <Gate kind>
void BM_GateBackward(benchmark::State& state) {
  const index_t H = state.range(0), T = state.range(1), B = 1, K = kDim, V = kDim;
  const int threads = static_cast<int>(state.range(2));
  const Inputs& in = inputs();
  const index_t gw = kind == Gate::scalar ? 1 : K;
  Buffer dq(static_cast<std::size_t>(B * T * H * K)), dk(dq.size()), dv(static_cast<std::size_t>(B * T * H * V));
  Buffer dg(static_cast<std::size_t>(B * T * H * gw));
  const Ops ops(kind, B, T, H);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, T, H, K}), k = lcsm::view(in.k.data(), {B, T, H, K});
  const auto v = lcsm::view(in.v.data(), {B, T, H, V}), d_o = lcsm::view(in.d_o.data(), {B, T, H, V});
  const double th = static_cast<double>(B * T * H);
  const Work w{static_cast<double>(B * T), th * (6.0 * kChunk * (K + V) + 10.0 * K * V),
               th * 4.0 * (4 * K + 3 * V + 2 * gw)};
  timed(state, w, kGemm, [&] {
    const auto dqv = lcsm::view(dq.data(), {B, T, H, K}), dkv = lcsm::view(dk.data(), {B, T, H, K});
    const auto dvv = lcsm::view(dv.data(), {B, T, H, V});
    if constexpr (kind == Gate::scalar)
      lcsm::backward<float>(dev, ops.scalar, q, k, v, d_o, dqv, dkv, dvv, {}, lcsm::view(dg.data(), {B, T, H}));
    else lcsm::backward<float>(dev, ops.vector, q, k, v, d_o, dqv, dkv, dvv, {}, lcsm::view(dg.data(), {B, T, H, K}));
    benchmark::DoNotOptimize(dq.data());
    benchmark::ClobberMemory();
  });
}

// Decode: one token for each of B sequences, H = 16, state [B, H, K, V] float advanced in place,
// stepping the next state of a ring spanning >= 96 MiB (as lightning's decode benchmark). Args: B,
// threads. Bytes: the state read and written plus q, k, v, the gate and o.
template <Gate kind>
void BM_GateDecode(benchmark::State& state) {
  const index_t B = state.range(0), H = 16, K = kDim, V = kDim;
  const int threads = static_cast<int>(state.range(1));
  const Inputs& in = inputs();
  const std::size_t state_elems = static_cast<std::size_t>(B * H * K * V);
  const std::size_t ring = std::max<std::size_t>(1, ((std::size_t{96} << 20) / 4 + state_elems - 1) / state_elems);
  Buffer states(ring * state_elems);
  fill_normal(states.data(), states.size(), 99);
  for (std::size_t i = 0; i < states.size(); ++i) states.data()[i] *= 0.1f;
  Buffer o(static_cast<std::size_t>(B * H * V));
  const Ops ops(kind, B, 1, H);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, 1, H, K}), k = lcsm::view(in.k.data(), {B, 1, H, K});
  const auto v = lcsm::view(in.v.data(), {B, 1, H, V});
  const auto out = lcsm::view(o.data(), {B, 1, H, V});
  const double bh = static_cast<double>(B * H), gw = kind == Gate::scalar ? 1 : K;
  const Work w{static_cast<double>(B), bh * 4.0 * K * V, bh * 4.0 * (2.0 * K * V + 2 * K + 2 * V + gw)};
  std::size_t next = 0;
  timed(state, w, kBandwidth, [&] {
    const auto s = lcsm::view(states.data() + next * state_elems, {B, H, K, V});
    if constexpr (kind == Gate::scalar) lcsm::step<float>(dev, ops.scalar, q, k, v, out, s);
    else lcsm::step<float>(dev, ops.vector, q, k, v, out, s);
    next = next + 1 == ring ? 0 : next + 1;
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  });
  state.counters["ring_states"] = static_cast<double>(ring);
}

void shape_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"H", "T", "threads"});
  for (index_t H : {16, 4})
    for (index_t T : {1024, 4096, 16384, 65536}) b->Args({H, T, kThreads});
}

void BM_ScalarGateForward(benchmark::State& s) { BM_GateForward<Gate::scalar>(s); }
void BM_VectorGateForward(benchmark::State& s) { BM_GateForward<Gate::vector>(s); }
void BM_ScalarGateBackward(benchmark::State& s) { BM_GateBackward<Gate::scalar>(s); }
void BM_VectorGateBackward(benchmark::State& s) { BM_GateBackward<Gate::vector>(s); }
void BM_ScalarGateDecode(benchmark::State& s) { BM_GateDecode<Gate::scalar>(s); }
void BM_VectorGateDecode(benchmark::State& s) { BM_GateDecode<Gate::vector>(s); }

}  // namespace

BENCHMARK(BM_ScalarGateForward)->Apply(shape_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VectorGateForward)->Apply(shape_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ScalarGateBackward)->Apply(shape_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VectorGateBackward)->Apply(shape_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ScalarGateDecode)
    ->ArgNames({"B", "threads"})
    ->Args({64, kThreads})
    ->Args({1, kThreads})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_VectorGateDecode)
    ->ArgNames({"B", "threads"})
    ->Args({64, kThreads})
    ->Args({1, kThreads})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
