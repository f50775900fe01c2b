// CPU benchmarks of cosFormer: forward (causal and not), backward and decode, float, B = 1,
// K = V = 128, ReLU features, chunk 64 (counters: see reference_rates_bench.cpp).
//
// FLOP counts are lightning_bench.cpp's nominal ones for the EOS instance cosFormer runs: 2K
// features (cos and sin) and V + 1 value columns (the denominator's), so that flops and frac_gemm
// compare directly with lightning attention's. Per token and head, with K' = 2K, V' = V + 1:
//   causal forward      2*C*K' + 2*C*V' + 4*K'*V'   (scores, scores x values, Q'S and K'^T V')
//   non-causal forward  4*K'*V'                     (K'^T V' over the sequence, then Q'S)
//   backward (causal)   6*C*(K' + V') + 10*K'*V'    (non-causal: 8*K'*V')
//   decode              4*K'*V' per head
// The feature maps, cos/sin weights and the division are not counted. Bytes: q, k, v read, o
// written (backward: q, k, v, do read, dq, dk, dv written); decode: the state read and written.
#include "cpu/common.hpp"
#include "lcsm/lcsm.hpp"

namespace {

using namespace lcsm::bench;

lcsm::CosFormerAttention make_op(bool causal) {
  lcsm::CosFormerAttention op;
  op.causal = causal;
  op.chunk = kChunk;
  return op;
}

// Nominal FLOP per token and head (see the top of the file).
double forward_flop(bool causal) {
  const double K = 2.0 * kDim, V = kDim + 1.0;
  return causal ? 2.0 * kChunk * K + 2.0 * kChunk * V + 4.0 * K * V : 4.0 * K * V;
}
double backward_flop(bool causal) {
  const double K = 2.0 * kDim, V = kDim + 1.0;
  return causal ? 6.0 * kChunk * (K + V) + 10.0 * K * V : 8.0 * K * V;
}

// Args: H, T, causal, threads.
void BM_CosformerForward(benchmark::State& state) {
  const index_t H = state.range(0), T = state.range(1), B = 1, K = kDim, V = kDim;
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  const Inputs& in = inputs();
  Buffer o(static_cast<std::size_t>(B * T * H * V));
  const auto op = make_op(causal);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, T, H, K}), k = lcsm::view(in.k.data(), {B, T, H, K});
  const auto v = lcsm::view(in.v.data(), {B, T, H, V});
  const auto out = lcsm::view(o.data(), {B, T, H, V});
  const double th = static_cast<double>(B * T * H);
  const Work w{static_cast<double>(B * T), th * forward_flop(causal), th * 4.0 * (2 * K + 2 * V)};
  timed(state, w, kGemm, [&] {
    lcsm::forward<float>(dev, op, q, k, v, out);
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  });
}

// Args: H, T, causal, threads.
void BM_CosformerBackward(benchmark::State& state) {
  const index_t H = state.range(0), T = state.range(1), B = 1, K = kDim, V = kDim;
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  const Inputs& in = inputs();
  Buffer dq(static_cast<std::size_t>(B * T * H * K)), dk(dq.size()), dv(static_cast<std::size_t>(B * T * H * V));
  const auto op = make_op(causal);
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, T, H, K}), k = lcsm::view(in.k.data(), {B, T, H, K});
  const auto v = lcsm::view(in.v.data(), {B, T, H, V}), d_o = lcsm::view(in.d_o.data(), {B, T, H, V});
  const double th = static_cast<double>(B * T * H);
  const Work w{static_cast<double>(B * T), th * backward_flop(causal), th * 4.0 * (4 * K + 3 * V)};
  timed(state, w, kGemm, [&] {
    lcsm::backward<float>(dev, op, q, k, v, d_o, lcsm::view(dq.data(), {B, T, H, K}),
                          lcsm::view(dk.data(), {B, T, H, K}), lcsm::view(dv.data(), {B, T, H, V}));
    benchmark::DoNotOptimize(dq.data());
    benchmark::ClobberMemory();
  });
}

// Decode: one token for each of B sequences at position 1000 of a stream with M fixed at 2^20,
// H = 16, state [B, H, 2K, V + 1] float advanced in place, stepping the next state of a ring
// spanning >= 96 MiB (as lightning's decode benchmark). Args: B, threads.
void BM_CosformerDecode(benchmark::State& state) {
  const index_t B = state.range(0), H = 16, K = kDim, V = kDim;
  const int threads = static_cast<int>(state.range(1));
  const Inputs& in = inputs();
  const std::size_t state_elems = static_cast<std::size_t>(B * H * 2 * K * (V + 1));
  const std::size_t ring = std::max<std::size_t>(1, ((std::size_t{96} << 20) / 4 + state_elems - 1) / state_elems);
  Buffer states(ring * state_elems);
  fill_normal(states.data(), states.size(), 99);
  for (std::size_t i = 0; i < states.size(); ++i) states.data()[i] = 0.1f * std::fabs(states.data()[i]);
  Buffer o(static_cast<std::size_t>(B * H * V));
  const std::vector<index_t> positions(static_cast<std::size_t>(B), 1000);
  auto op = make_op(true);
  op.length = index_t{1} << 20;
  op.positions = lcsm::view(positions.data(), {B});
  const lcsm::cpu::Device dev{threads};
  const auto q = lcsm::view(in.q.data(), {B, 1, H, K}), k = lcsm::view(in.k.data(), {B, 1, H, K});
  const auto v = lcsm::view(in.v.data(), {B, 1, H, V});
  const auto out = lcsm::view(o.data(), {B, 1, H, V});
  const double bh = static_cast<double>(B * H), Kf = 2.0 * K, Vf = V + 1.0;
  const Work w{static_cast<double>(B), bh * 4.0 * Kf * Vf, bh * 4.0 * (2.0 * Kf * Vf + 2 * K + 2 * V)};
  std::size_t next = 0;
  timed(state, w, kBandwidth, [&] {
    const auto s = lcsm::view(states.data() + next * state_elems, {B, H, 2 * K, V + 1});
    lcsm::step<float>(dev, op, q, k, v, out, s);
    next = next + 1 == ring ? 0 : next + 1;
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  });
  state.counters["ring_states"] = static_cast<double>(ring);
}

void shape_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"H", "T", "causal", "threads"});
  for (int causal : {1, 0})
    for (index_t H : {16, 4})
      for (index_t T : {1024, 4096, 16384, 65536}) b->Args({H, T, causal, kThreads});
}

}  // namespace

BENCHMARK(BM_CosformerForward)->Apply(shape_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CosformerBackward)->Apply(shape_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CosformerDecode)
    ->ArgNames({"B", "threads"})
    ->Args({64, kThreads})
    ->Args({1, kThreads})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
