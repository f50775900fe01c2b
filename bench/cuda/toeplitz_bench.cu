// CUDA Toeplitz convolution benchmarks at C = 1024 channels, bf16: the forward (causal and
// bidirectional) and backward (dx and da) at n = 4K .. 1M (the FFT path; the fused FFT convolution
// at every n too), the direct path at short n, and decode at B = 64 over a 4K-token history.
// bytes/s counts x read and y written once (the memory floor: 4 bytes per token and channel);
// flop/s counts the FFT path's three transforms, 5 L log2 L each.
#include <cmath>

#include "common.cuh"

namespace {

using namespace lcsm_bench;
using E = __nv_bfloat16;

struct ToeplitzBuffers {
  std::int64_t B, n, C, count;
  Buffer x, y, a;
  ToeplitzBuffers(std::int64_t B_, std::int64_t n_, std::int64_t C_, bool causal)
      : B(B_), n(n_), C(C_), count(causal ? n_ : 2 * n_ - 1), x(B_ * n_ * C_ * 2), y(B_ * n_ * C_ * 2),
        a(C_ * (causal ? n_ : 2 * n_ - 1) * 2) {
    fill_inputs<E>(x.p, B * n * C, 11);
    fill_inputs<E>(y.p, B * n * C, 19);  // the backward's dy (finite: NaN columns would take direct sums)
    fill_inputs<E>(a.p, C * count, 13);
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  }
  lcsm::ToeplitzConvolution<E> op(bool causal, bool fft) const {
    lcsm::ToeplitzConvolution<E> o;
    o.coefficients = lcsm::view(static_cast<const E*>(a.p), {C, count});
    o.causal = causal;
    o.path = fft ? lcsm::ToeplitzConvolution<E>::Path::fft : lcsm::ToeplitzConvolution<E>::Path::direct;
    return o;
  }
  lcsm::View<E, 3> sequences(void* p) const { return lcsm::view(static_cast<E*>(p), {B, n, C}); }
};

void toeplitz_counters(benchmark::State& state, double median, double B, double n, double C, double bytes,
                       double transforms) {
  using Ctr = benchmark::Counter;
  const double L = std::exp2(std::ceil(std::log2(std::max(32.0, 2 * n - 1))));
  const double flops = transforms * B * C * 5.0 * L * std::log2(L);
  bandwidth_counters(state, median, bytes);
  state.counters["flop_per_second"] = Ctr(flops / median, Ctr::kDefaults, Ctr::OneK::kIs1000);
}

// kKernels: automatic (the fused FFT convolution at FFT lengths 2^16..2^18, cuFFT elsewhere) or
// fused_fft (the fused one at every length it serves).
template <bool kCausal, bool kFft, lcsm::cuda::Kernels kKernels = lcsm::cuda::Kernels::automatic>
void BM_toeplitz_forward(benchmark::State& state) {
  const std::int64_t B = state.range(0), n = state.range(1), C = state.range(2);
  ToeplitzBuffers buf(B, n, C, kCausal);
  const auto op = buf.op(kCausal, kFft);
  const auto x = buf.sequences(buf.x.p);
  const std::size_t bytes = lcsm::cuda::forward_workspace_bytes<E>(op, x, {}, kKernels);
  Buffer ws(bytes);
  const lcsm::cuda::Device dev{nullptr, {ws.p, bytes}, kKernels};
  const double median = run_timed(state, [&] { lcsm::forward<E>(dev, op, x, buf.sequences(buf.y.p)); });
  toeplitz_counters(state, median, B, n, C, 4.0 * B * n * C + 2.0 * C * buf.count, 3);
  state.counters["workspace_bytes"] = static_cast<double>(bytes);
}

void BM_toeplitz_backward(benchmark::State& state) {
  const std::int64_t B = state.range(0), n = state.range(1), C = state.range(2);
  ToeplitzBuffers buf(B, n, C, true);
  Buffer dx(B * n * C * 2), da(C * n * 2);
  const auto op = buf.op(true, true);
  const auto x = buf.sequences(buf.x.p);
  const std::size_t bytes = lcsm::cuda::backward_workspace_bytes<E>(op, x, true, true);
  Buffer ws(bytes);
  const lcsm::cuda::Device dev{nullptr, {ws.p, bytes}};
  const double median = run_timed(state, [&] {
    lcsm::backward<E>(dev, op, x, buf.sequences(buf.y.p), buf.sequences(dx.p),
                      lcsm::view(static_cast<E*>(da.p), {C, n}));
  });
  toeplitz_counters(state, median, B, n, C, 6.0 * B * n * C + 4.0 * C * n, 6);
  state.counters["workspace_bytes"] = static_cast<double>(bytes);
}

void BM_toeplitz_decode(benchmark::State& state) {
  const std::int64_t B = state.range(0), n_max = state.range(1), C = 1024;
  ToeplitzBuffers buf(B, n_max, C, true);
  Buffer xt(B * C * 2), yt(B * C * 2);
  fill_inputs<E>(xt.p, B * C, 17);
  const auto op = buf.op(true, false);
  const double median = run_timed(state, [&] {
    lcsm::ToeplitzHistory<E> h{buf.sequences(buf.x.p), n_max - 1};  // the last token of a full history
    lcsm::step<E>(lcsm::cuda::Device{}, op, lcsm::view(static_cast<const E*>(xt.p), {B, 1, C}),
                  lcsm::view(static_cast<E*>(yt.p), {B, 1, C}), h);
  });
  const double bytes = 2.0 * B * n_max * C + 2.0 * C * n_max;  // history and coefficients read once
  bandwidth_counters(state, median, bytes);
}

void fft_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "n", "C"});
  for (std::int64_t n : {4096, 65536, 1 << 20}) b->Args({1, n, 1024});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}
void direct_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "n", "C"});
  for (std::int64_t n : {64, 256, 1024, 4096}) b->Args({8, n, 1024});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_toeplitz_forward, true, true)->Name("BM_toeplitz_forward_causal<bf16>")->Apply(fft_shapes);
BENCHMARK_TEMPLATE(BM_toeplitz_forward, false, true)
    ->Name("BM_toeplitz_forward_bidirectional<bf16>")
    ->Apply(fft_shapes);
BENCHMARK_TEMPLATE(BM_toeplitz_forward, true, true, lcsm::cuda::Kernels::fused_fft)
    ->Name("BM_toeplitz_forward_causal_fused<bf16>")
    ->Apply(fft_shapes);
// The switch-over: both paths at the same short lengths (B = 8).
BENCHMARK_TEMPLATE(BM_toeplitz_forward, true, true)->Name("BM_toeplitz_forward_causal_fft<bf16>")->Apply(direct_shapes);
BENCHMARK_TEMPLATE(BM_toeplitz_forward, true, false)
    ->Name("BM_toeplitz_forward_causal_direct<bf16>")
    ->Apply(direct_shapes);
BENCHMARK(BM_toeplitz_backward)->Name("BM_toeplitz_backward_causal<bf16>")->Apply(fft_shapes);
BENCHMARK(BM_toeplitz_decode)
    ->Name("BM_toeplitz_decode<bf16>")
    ->ArgNames({"B", "n_max"})
    ->Args({64, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
