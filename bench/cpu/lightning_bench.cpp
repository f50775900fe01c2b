// CPU benchmarks of lightning attention: forward, backward and decode (counters: see
// reference_rates_bench.cpp).
#include "cpu/common.hpp"
#include "lcsm/lcsm.hpp"

namespace {

using namespace lcsm::bench;

lcsm::LightningAttention make_op(index_t H) {
  lcsm::LightningAttention op;
  op.log_decay = lcsm::decay::alibi(static_cast<int>(H));
  op.chunk = kChunk;
  return op;
}

// ---------------------------------------------------------------------------------------------
// Lightning attention forward. Args: H, T, threads. B = 1, K = V = 128, chunk 64.
// FLOP per token and head, chunk C: 4*C*K + 4*K*V (the count, exact for K = V):
//   Q K^T and [.] V, 2*C*K + 2*C*V (dense, the masked half included), Q S and K^T V, 4*K*V.
// Bytes: q, k, v read, o written, 4 bytes each element.
void BM_LightningForward(benchmark::State& state) {
  const index_t H = state.range(0), T = state.range(1), B = 1, K = kDim, V = kDim;
  const int threads = static_cast<int>(state.range(2));
  const Inputs& in = inputs();
  Buffer o(static_cast<std::size_t>(B * T * H * V));
  const auto op = make_op(H);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, T, H, K}), k = lcsm::view(in.k.data(), {B, T, H, K});
  const auto v = lcsm::view(in.v.data(), {B, T, H, V});
  const auto out = lcsm::view(o.data(), {B, T, H, V});
  const double th = static_cast<double>(B * T * H);
  const Work w{static_cast<double>(B * T), th * (4.0 * kChunk * K + 4.0 * K * V), th * 4.0 * (2 * K + 2 * V)};
  timed(state, w, kGemm, [&] {
    lcsm::forward<float>(dev, op, q, k, v, out);
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  });
}

// Lightning attention backward (dq, dk, dv; no state gradients). FLOP per token and head, as the
// formulas in cpu/lightning.hpp do them (dense C x C products, the masked half included):
//   dq pass: P = dO V^T (2CV), P K (2CK), dO S^T (2KV), state update K^T V (2KV)
//   dk/dv pass: P = dO V^T again (2CV), A = Q K^T (2CK), P^T Q (2CK), A^T dO (2CV),
//               V dS'^T (2KV), K dS' (2KV), dS update Q^T dO (2KV)
//   total 6*C*(K + V) + 10*K*V  (= 12*C*K + 10*K*V for K = V; 2.67x the forward at C = 64, D = 128)
// Bytes: q, k, v, do read, dq, dk, dv written.
void BM_LightningBackward(benchmark::State& state) {
  const index_t H = state.range(0), T = state.range(1), B = 1, K = kDim, V = kDim;
  const int threads = static_cast<int>(state.range(2));
  const Inputs& in = inputs();
  Buffer dq(static_cast<std::size_t>(B * T * H * K)), dk(dq.size()), dv(static_cast<std::size_t>(B * T * H * V));
  const auto op = make_op(H);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, T, H, K}), k = lcsm::view(in.k.data(), {B, T, H, K});
  const auto v = lcsm::view(in.v.data(), {B, T, H, V}), d_o = lcsm::view(in.d_o.data(), {B, T, H, V});
  const double th = static_cast<double>(B * T * H);
  const Work w{static_cast<double>(B * T), th * (6.0 * kChunk * (K + V) + 10.0 * K * V), th * 4.0 * (4 * K + 3 * V)};
  timed(state, w, kGemm, [&] {
    lcsm::backward<float>(dev, op, q, k, v, d_o, lcsm::view(dq.data(), {B, T, H, K}),
                          lcsm::view(dk.data(), {B, T, H, K}), lcsm::view(dv.data(), {B, T, H, V}));
    benchmark::DoNotOptimize(dq.data());
    benchmark::ClobberMemory();
  });
}

// Decode: one token for each of B sequences, H = 16, state [B, H, K, V] float advanced in place.
// Args: B, threads, hot. FLOP per head: 2*K*V (decay and update, one FMA per element) + 2*K*V (the
// output) = 4*K*V. Bytes: the state read and written (2 * B*H*K*V * 4) plus q, k, v read, o written.
// Unless `hot`, each iteration advances the next of a ring of states that together span >= 96 MiB
// (3x the L3): in a model, the other layers' states pass through the caches between two steps of
// one layer, so a state never stays cached. `hot` steps one state again and again (B = 1: 1 MiB,
// L2-resident), an upper bound, not a memory-bandwidth number.
void BM_LightningDecode(benchmark::State& state) {
  const index_t B = state.range(0), H = 16, K = kDim, V = kDim;
  const int threads = static_cast<int>(state.range(1));
  const bool hot = state.range(2) != 0;
  const Inputs& in = inputs();
  const std::size_t state_elems = static_cast<std::size_t>(B * H * K * V);
  const std::size_t ring =
      hot ? 1 : std::max<std::size_t>(1, ((std::size_t{96} << 20) / 4 + state_elems - 1) / state_elems);
  Buffer states(ring * state_elems);
  fill_normal(states.data(), states.size(), 99);
  for (std::size_t i = 0; i < states.size(); ++i) states.data()[i] *= 0.1f;
  Buffer o(static_cast<std::size_t>(B * H * V));
  const auto op = make_op(H);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, 1, H, K}), k = lcsm::view(in.k.data(), {B, 1, H, K});
  const auto v = lcsm::view(in.v.data(), {B, 1, H, V});
  const auto out = lcsm::view(o.data(), {B, 1, H, V});
  const double bh = static_cast<double>(B * H);
  const Work w{static_cast<double>(B), bh * 4.0 * K * V, bh * 4.0 * (2.0 * K * V + 2 * K + 2 * V)};
  std::size_t next = 0;
  timed(state, w, kBandwidth, [&] {
    lcsm::step<float>(dev, op, q, k, v, out, lcsm::view(states.data() + next * state_elems, {B, H, K, V}));
    next = next + 1 == ring ? 0 : next + 1;
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  });
  state.counters["ring_states"] = static_cast<double>(ring);
}

void forward_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"H", "T", "threads"});
  for (index_t H : {16, 4})
    for (index_t T : {1024, 4096, 16384, 65536}) b->Args({H, T, kThreads});
  b->Args({16, 16384, 1});
}

void backward_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"H", "T", "threads"});
  for (index_t H : {16, 4})
    for (index_t T : {1024, 4096, 16384, 65536}) b->Args({H, T, kThreads});
}

}  // namespace

BENCHMARK(BM_LightningForward)->Apply(forward_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LightningBackward)->Apply(backward_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LightningDecode)
    ->ArgNames({"B", "threads", "hot"})
    ->Args({64, kThreads, 0})
    ->Args({1, kThreads, 0})
    ->Args({1, kThreads, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
