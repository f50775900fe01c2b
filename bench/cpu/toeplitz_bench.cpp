// CPU benchmarks of the Toeplitz long convolution: forward and backward (FFT path), the direct
// and FFT paths at short n (the switch-over), and decode over a kept history.
//
// Counters (decimal units): a real FFT of length L is counted as 5 L log2 L FLOP (the usual
// nominal count of a complex FFT; a real transform does about half of it, so the rate is an upper
// bound of the real work), the spectrum products as 6 FLOP per bin; the direct path as 2 FLOP per
// product it sums (n^2 causal, 2 n^2 bidirectional, per channel). Bytes: x and the coefficients
// read once, y written once (backward: x, dy, coefficients read, dx and da written).
#include <cmath>

#include "cpu/common.hpp"
#include "lcsm/lcsm.hpp"

namespace {

using namespace lcsm::bench;
using Op = lcsm::ToeplitzConvolution<float>;

constexpr index_t kMaxN = index_t{1} << 18;  // 256K
constexpr index_t kChannels = 1024;

// x, dy [1, n, C] and coefficients [C, 2n - 1], made once at the largest shape (4 GiB in all);
// every benchmark views a prefix. Outputs are allocated per benchmark.
struct ToeplitzInputs {
  Buffer x, dy, a;
};
const ToeplitzInputs& toeplitz_inputs() {
  static const ToeplitzInputs in = [] {
    ToeplitzInputs r;
    const std::size_t n = static_cast<std::size_t>(kMaxN * kChannels);
    Buffer* all[] = {&r.x, &r.dy, &r.a};
    const std::size_t sizes[] = {n, n, 2 * n};
    concurrently(kThreads, [&](int w) {
      for (int i = w; i < 3; i += kThreads) {
        *all[i] = Buffer(sizes[i]);
        fill_normal(all[i]->data(), sizes[i], 500 + i);
      }
    });
    return r;
  }();
  return in;
}

Op make_op(index_t C, index_t n, bool causal, Op::Path path) {
  Op op;
  op.causal = causal;
  op.path = path;
  op.coefficients =
      lcsm::view(static_cast<const float*>(toeplitz_inputs().a.data()), {C, Op::coefficient_count(causal, n)});
  return op;
}

double fft_flop(index_t n) {
  const double L = static_cast<double>(lcsm::cpu::detail::fft_length(2 * n - 1));
  return 5.0 * L * std::log2(L);
}
double product_flop(index_t n) { return 6.0 * (static_cast<double>(lcsm::cpu::detail::fft_length(2 * n - 1)) / 2 + 1); }

// Args: C, n, causal, threads. B = 1. FLOP per channel: 3 FFTs (coefficients, x, inverse) + 1 product.
void BM_ToeplitzForward(benchmark::State& state) {
  const index_t C = state.range(0), n = state.range(1);
  const bool causal = state.range(2) != 0;
  const lcsm::cpu::Device dev{static_cast<int>(state.range(3))};
  const auto op = make_op(C, n, causal, Op::Path::fft);
  Buffer y(static_cast<std::size_t>(n * C));
  const auto x = lcsm::view(static_cast<const float*>(toeplitz_inputs().x.data()), {1, n, C});
  const auto out = lcsm::view(y.data(), {1, n, C});
  const double Cd = static_cast<double>(C);
  const Work w{static_cast<double>(n), Cd * (3 * fft_flop(n) + product_flop(n)),
               4.0 * (2.0 * n * Cd + Cd * op.coefficients.size(1))};
  timed(state, w, 0, [&] {
    lcsm::forward<float>(dev, op, x, out);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  });
}

// Backward: dx and da. FLOP per channel: 5 FFTs (coefficients, x, dy, inverse for dx, inverse for
// da) + 2 products.
void BM_ToeplitzBackward(benchmark::State& state) {
  const index_t C = state.range(0), n = state.range(1);
  const bool causal = state.range(2) != 0;
  const lcsm::cpu::Device dev{static_cast<int>(state.range(3))};
  const auto op = make_op(C, n, causal, Op::Path::fft);
  Buffer dx(static_cast<std::size_t>(n * C)), da(static_cast<std::size_t>(op.coefficients.numel()));
  const auto& in = toeplitz_inputs();
  const auto x = lcsm::view(static_cast<const float*>(in.x.data()), {1, n, C});
  const auto dy = lcsm::view(static_cast<const float*>(in.dy.data()), {1, n, C});
  const double Cd = static_cast<double>(C), count = static_cast<double>(op.coefficients.size(1));
  const Work w{static_cast<double>(n), Cd * (5 * fft_flop(n) + 2 * product_flop(n)),
               4.0 * (3.0 * n * Cd + 2.0 * Cd * count)};
  timed(state, w, 0, [&] {
    lcsm::backward<float>(dev, op, x, dy, lcsm::view(dx.data(), {1, n, C}),
                          lcsm::view(da.data(), {C, op.coefficients.size(1)}));
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  });
}

// Short n, one path forced: the direct sums (BM_ToeplitzDirect) against the FFT (BM_ToeplitzFftShort);
// where they cross is ToeplitzConvolution::direct_max_length.
void short_forward(benchmark::State& state, Op::Path path) {
  const index_t C = state.range(0), n = state.range(1);
  const bool causal = state.range(2) != 0;
  const lcsm::cpu::Device dev{static_cast<int>(state.range(3))};
  const auto op = make_op(C, n, causal, path);
  Buffer y(static_cast<std::size_t>(n * C));
  const auto x = lcsm::view(static_cast<const float*>(toeplitz_inputs().x.data()), {1, n, C});
  const auto out = lcsm::view(y.data(), {1, n, C});
  const double Cd = static_cast<double>(C), nd = static_cast<double>(n);
  const double flop =
      path == Op::Path::direct ? Cd * 2.0 * nd * nd * (causal ? 0.5 : 1.0) : Cd * (3 * fft_flop(n) + product_flop(n));
  const Work w{nd, flop, 4.0 * (2.0 * nd * Cd + Cd * op.coefficients.size(1))};
  timed(state, w, 0, [&] {
    lcsm::forward<float>(dev, op, x, out);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  });
}
void BM_ToeplitzDirect(benchmark::State& state) { short_forward(state, Op::Path::direct); }
void BM_ToeplitzFftShort(benchmark::State& state) { short_forward(state, Op::Path::fft); }

// Decode: one token for B = 1 at position n - 1 of a history of n tokens ([B, C, n] memory, so that
// each channel's history is contiguous), causal. Args: C, n, threads. FLOP: 2 n C; bytes: the
// history and the coefficients read (2 * 4 n C).
void BM_ToeplitzDecode(benchmark::State& state) {
  const index_t C = state.range(0), n = state.range(1);
  const lcsm::cpu::Device dev{static_cast<int>(state.range(2))};
  const auto op = make_op(C, n, true, Op::Path::automatic);
  Buffer history(static_cast<std::size_t>(n * C)), y(static_cast<std::size_t>(C));
  std::copy(toeplitz_inputs().x.data(), toeplitz_inputs().x.data() + n * C, history.data());
  lcsm::ToeplitzHistory<float> h{lcsm::view(history.data(), {1, C, n}).transposed(1, 2), n - 1};
  const auto x = lcsm::view(static_cast<const float*>(toeplitz_inputs().dy.data()), {1, 1, C});
  const auto out = lcsm::view(y.data(), {1, 1, C});
  const double Cd = static_cast<double>(C), nd = static_cast<double>(n);
  const Work w{1.0, 2.0 * nd * Cd, 4.0 * 2.0 * nd * Cd};
  timed(state, w, kBandwidth, [&] {
    h.position = n - 1;
    lcsm::step<float>(dev, op, x, out, h);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  });
}

void long_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"C", "n", "causal", "threads"});
  for (index_t n : {1024, 4096, 16384, 65536, 262144}) b->Args({kChannels, n, 1, kThreads});
  for (index_t n : {4096, 65536}) b->Args({kChannels, n, 0, kThreads});
  b->Args({kChannels, 65536, 1, 1});
}

void short_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"C", "n", "causal", "threads"});
  for (index_t n : {16, 32, 48, 64, 96, 128, 192, 256, 384, 512})
    for (index_t causal : {1, 0}) b->Args({kChannels, n, causal, kThreads});
}

}  // namespace

BENCHMARK(BM_ToeplitzForward)->Apply(long_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ToeplitzBackward)->Apply(long_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ToeplitzDirect)->Apply(short_args)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ToeplitzFftShort)->Apply(short_args)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ToeplitzDecode)
    ->ArgNames({"C", "n", "threads"})
    ->Args({kChannels, 4096, kThreads})
    ->Args({kChannels, 65536, kThreads})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
