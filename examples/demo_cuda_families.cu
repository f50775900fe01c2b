// The GPU demo's other families at the demo's T: the scalar gate (fla's log-sigmoid gates / 16)
// and the vector gate, cosFormer (ReLU, M = T) with H = 16, K = V = 128, and the Toeplitz
// convolution with C = 1024 channels (coefficients r^-1/2 times N(0, 1), as a smooth long kernel),
// all bf16 with fp32 states. Each prints its forward (exact and fast where it has both), a training
// step (forward + backward), a decode step of 64 sequences, and the error of 64 rows of head 0
// (Toeplitz: of two channels) from the sequence's second half against the float64 reference.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "demo_cuda.cuh"
#include "lcsm/cuda.cuh"
#include "lcsm/reference/cosformer.hpp"
#include "lcsm/reference/gated.hpp"
#include "lcsm/reference/toeplitz.hpp"

namespace demo {
namespace {

using E = __nv_bfloat16;
constexpr int kRows = 64;  // sampled rows per error

// Row r of the sampled ones: spread over the second half of the sequence, where every family's
// output sums many tokens (cosFormer's first rows are a few v's averaged, near-exact in bf16, and
// would dominate a relative error over all rows).
std::int64_t sampled_row(std::int64_t T, int r) { return T / 2 + (T - 1 - T / 2) * r / (kRows - 1); }

std::vector<E> normal_bf16(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<E> x(static_cast<std::size_t>(n));
  for (auto& e : x) e = __float2bfloat16_rn(normal(rng));
  return x;
}

void upload(void* to, const void* from, std::size_t bytes) {
  LCSM_CUDA_CHECK(cudaMemcpy(to, from, bytes, cudaMemcpyHostToDevice));
}

void print_row(const std::string& what, double ms, double tokens, double bytes) {
  std::printf("%-36s %10.3f %14.3e %12.1f\n", what.c_str(), ms, tokens / (ms * 1e-3), bytes / (ms * 1e-3) / 1e9);
}

// q, k, v, dO [1, T, 16, 128] in bf16, on the host (for the reference) and the device.
struct Inputs {
  std::int64_t T, H = 16, D = 128, n;
  std::vector<E> hq, hk, hv;
  DeviceMemory q, k, v, o, d_o, dq, dk, dv;
  explicit Inputs(std::int64_t tokens)
      : T(tokens), n(tokens * 16 * 128), hq(normal_bf16(n, 11)), hk(normal_bf16(n, 12)), hv(normal_bf16(n, 13)),
        q(n * 2), k(n * 2), v(n * 2), o(n * 2), d_o(n * 2), dq(n * 2), dk(n * 2), dv(n * 2) {
    upload(q.p, hq.data(), n * 2);
    upload(k.p, hk.data(), n * 2);
    upload(v.p, hv.data(), n * 2);
    upload(d_o.p, hq.data(), n * 2);  // any dO: the training step's time does not depend on it
  }
  lcsm::View<E, 4> view(void* p) const { return lcsm::view(static_cast<E*>(p), {1, T, H, D}); }
  // Head 0 of x as float64 [1, T, 1, D].
  std::vector<double> head0(const std::vector<E>& x) const {
    std::vector<double> out(static_cast<std::size_t>(T * D));
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t d = 0; d < D; ++d) out[t * D + d] = __bfloat162float(x[(t * H) * D + d]);
    return out;
  }
  // The device output o's sampled rows of head 0 against the reference's [T, D].
  double sampled_error(const std::vector<double>& reference) const {
    std::vector<E> ho(static_cast<std::size_t>(n));
    LCSM_CUDA_CHECK(cudaMemcpy(ho.data(), o.p, n * 2, cudaMemcpyDeviceToHost));
    std::vector<double> got, want;
    for (int r = 0; r < kRows; ++r) {
      const std::int64_t t = sampled_row(T, r);
      for (std::int64_t d = 0; d < D; ++d) {
        got.push_back(__bfloat162float(ho[(t * H) * D + d]));
        want.push_back(reference[t * D + d]);
      }
    }
    return rel_rms(got, want);
  }
  lcsm::View<const double, 4> head_view(const std::vector<double>& x) const {
    return lcsm::view(x.data(), {1, T, 1, D});
  }
};

// The forward in both precisions, a training step and a decode step of 64 sequences; run(exact)
// is the forward, train() forward + backward, decode() the step.
template <class Op, class Forward, class Train, class Decode>
void time_family(const std::string& name, const Inputs& in, Op& op, Forward&& forward, Train&& train, Decode&& decode,
                 double decode_bytes) {
  const double tokens = static_cast<double>(in.T), bytes = 4.0 * in.n * 2;
  for (auto precision : {lcsm::Precision::exact, lcsm::Precision::fast}) {
    op.precision = precision;
    print_row(name + (precision == lcsm::Precision::exact ? " forward (exact)" : " forward (fast)"), median_ms(forward),
              tokens, bytes);
  }
  op.precision = lcsm::Precision::exact;
  print_row(name + " training step", median_ms(train, 5), tokens, 11.0 * in.n * 2);
  print_row(name + " decode step, 64 sequences", median_ms(decode), 64, decode_bytes);
  forward();  // the exact outputs, for the error
}

// fla's gates: log(sigmoid(x)) / 16, x ~ N(0, 1): g in about [-0.3, 0).
std::vector<float> gates(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<float> g(static_cast<std::size_t>(n));
  for (auto& e : g) e = static_cast<float>(-std::log1p(std::exp(-normal(rng))) / 16);
  return g;
}

template <bool kVector>
void gated(const Inputs& in) {
  using Op = std::conditional_t<kVector, lcsm::VectorGatedAttention<E>, lcsm::ScalarGatedAttention<E>>;
  const std::int64_t W = kVector ? in.D : 1, count = in.T * in.H * W, Bd = 64;
  const std::vector<float> hg = gates(count, kVector ? 22 : 21), hg1 = gates(Bd * in.H * W, 23);
  DeviceMemory g(count * 4), dg(count * 4), g1(Bd * in.H * W * 4), state(Bd * in.H * in.D * in.D * 4);
  upload(g.p, hg.data(), count * 4);
  upload(g1.p, hg1.data(), Bd * in.H * W * 4);
  LCSM_CUDA_CHECK(cudaMemset(state.p, 0, Bd * in.H * in.D * in.D * 4));
  const auto gate_view = [&](void* p, std::int64_t B, std::int64_t T) {
    if constexpr (kVector) return lcsm::view(static_cast<float*>(p), {B, T, in.H, in.D});
    else return lcsm::view(static_cast<float*>(p), {B, T, in.H});
  };
  Op op;
  op.log_gate = gate_view(g.p, 1, in.T);
  const auto qv = in.view(in.q.p), kv = in.view(in.k.p), vv = in.view(in.v.p), dov = in.view(in.d_o.p);
  const std::size_t bytes = std::max(lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv),
                                     lcsm::cuda::backward_workspace_bytes<E>(op, qv, vv, {}, gate_view(dg.p, 1, in.T)));
  DeviceMemory ws(bytes);
  const lcsm::cuda::Device dev{nullptr, {ws.p, bytes}};
  const auto forward = [&] { lcsm::forward<E>(dev, op, qv, kv, vv, in.view(in.o.p)); };
  const auto train = [&] {
    forward();
    lcsm::backward<E>(dev, op, qv, kv, vv, dov, in.view(in.dq.p), in.view(in.dk.p), in.view(in.dv.p), {},
                      gate_view(dg.p, 1, in.T));
  };
  const auto decode = [&] {
    Op step_op = op;
    step_op.log_gate = gate_view(g1.p, Bd, 1);
    const auto one = [&](void* p) { return lcsm::view(static_cast<E*>(p), {Bd, 1, in.H, in.D}); };
    lcsm::step<E>(lcsm::cuda::Device{}, step_op, one(in.q.p), one(in.k.p), one(in.v.p), one(in.o.p),
                  lcsm::view(static_cast<float*>(state.p), {Bd, in.H, in.D, in.D}));
  };
  const char* name = kVector ? "vector gate" : "scalar gate";
  time_family(name, in, op, forward, train, decode, 2.0 * Bd * in.H * in.D * in.D * 4);

  // Head 0 in float64.
  std::vector<double> q = in.head0(in.hq), k = in.head0(in.hk), v = in.head0(in.hv), o(q.size()), g0(in.T * W);
  for (std::int64_t t = 0; t < in.T; ++t)
    for (std::int64_t w = 0; w < W; ++w) g0[t * W + w] = hg[(t * in.H) * W + w];
  using RefOp = std::conditional_t<kVector, lcsm::VectorGatedAttention<double>, lcsm::ScalarGatedAttention<double>>;
  RefOp ref;
  if constexpr (kVector) ref.log_gate = lcsm::view(static_cast<const double*>(g0.data()), {1, in.T, 1, in.D});
  else ref.log_gate = lcsm::view(static_cast<const double*>(g0.data()), {1, in.T, 1});
  lcsm::reference::gated_forward(ref, in.head_view(q), in.head_view(k), in.head_view(v),
                                 lcsm::view(o.data(), {1, in.T, 1, in.D}));
  std::printf("%-36s %10.3e   (rel RMS, %d rows of head 0 vs float64)\n", (std::string(name) + " error").c_str(),
              in.sampled_error(o), kRows);
}

void cosformer(const Inputs& in) {
  const std::int64_t Bd = 64, S = Bd * in.H * 2 * in.D * (in.D + 1);
  lcsm::CosFormerAttention op;
  const auto qv = in.view(in.q.p), kv = in.view(in.k.p), vv = in.view(in.v.p), dov = in.view(in.d_o.p);
  lcsm::CosFormerAttention non_causal = op;
  non_causal.causal = false;
  const std::size_t bytes = std::max({lcsm::cuda::forward_workspace_bytes<E>(op, qv, vv),
                                      lcsm::cuda::forward_workspace_bytes<E>(non_causal, qv, vv),
                                      lcsm::cuda::backward_workspace_bytes<E>(op, qv, vv)});
  DeviceMemory ws(bytes), state(S * 4), positions(Bd * 8);
  LCSM_CUDA_CHECK(cudaMemset(state.p, 0, S * 4));
  LCSM_CUDA_CHECK(cudaMemset(positions.p, 0, Bd * 8));
  const lcsm::cuda::Device dev{nullptr, {ws.p, bytes}};
  const auto forward = [&] { lcsm::forward<E>(dev, op, qv, kv, vv, in.view(in.o.p)); };
  const auto train = [&] {
    forward();
    lcsm::backward<E>(dev, op, qv, kv, vv, dov, in.view(in.dq.p), in.view(in.dk.p), in.view(in.dv.p));
  };
  const auto decode = [&] {
    lcsm::CosFormerAttention step_op;
    step_op.length = 1 << 20;
    step_op.positions = lcsm::view(static_cast<const lcsm::index_t*>(positions.p), {Bd});
    const auto one = [&](void* p) { return lcsm::view(static_cast<E*>(p), {Bd, 1, in.H, in.D}); };
    lcsm::step<E>(lcsm::cuda::Device{}, step_op, one(in.q.p), one(in.k.p), one(in.v.p), one(in.o.p),
                  lcsm::view(static_cast<float*>(state.p), {Bd, in.H, 2 * in.D, in.D + 1}));
  };
  print_row("cosFormer non-causal forward (exact)",
            median_ms([&] { lcsm::forward<E>(dev, non_causal, qv, kv, vv, in.view(in.o.p)); }),
            static_cast<double>(in.T), 4.0 * in.n * 2);
  time_family("cosFormer", in, op, forward, train, decode, 2.0 * S * 4);
  std::vector<double> q = in.head0(in.hq), k = in.head0(in.hk), v = in.head0(in.hv), o(q.size());
  lcsm::reference::cosformer_forward(op, in.head_view(q), in.head_view(k), in.head_view(v),
                                     lcsm::view(o.data(), {1, in.T, 1, in.D}));
  std::printf("%-36s %10.3e   (rel RMS, %d rows of head 0 vs float64)\n", "cosFormer error", in.sampled_error(o),
              kRows);
}

void toeplitz(std::int64_t n) {
  const std::int64_t C = 1024, count = n * C, checked[] = {0, C / 2};
  std::vector<E> hx = normal_bf16(count, 31), ha(static_cast<std::size_t>(count));
  std::mt19937_64 rng(32);
  std::normal_distribution<double> normal;
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t r = 0; r < n; ++r)
      ha[c * n + r] = __float2bfloat16_rn(static_cast<float>(normal(rng) / std::sqrt(r + 1.0)));
  DeviceMemory x(count * 2), a(count * 2), y(count * 2), dx(count * 2), da(count * 2);
  upload(x.p, hx.data(), count * 2);
  upload(a.p, ha.data(), count * 2);
  lcsm::ToeplitzConvolution<E> op;
  op.coefficients = lcsm::view(static_cast<const E*>(a.p), {C, n});
  const auto xv = lcsm::view(static_cast<const E*>(x.p), {1, n, C});
  const auto yv = lcsm::view(static_cast<E*>(y.p), {1, n, C});
  const std::size_t bytes = std::max(lcsm::cuda::forward_workspace_bytes<E>(op, xv),
                                     lcsm::cuda::backward_workspace_bytes<E>(op, xv, true, true));
  DeviceMemory ws(bytes);
  const lcsm::cuda::Device dev{nullptr, {ws.p, bytes}};
  const auto forward = [&] { lcsm::forward<E>(dev, op, xv, yv); };
  print_row("Toeplitz C=1024 forward (causal)", median_ms(forward), static_cast<double>(n), 3.0 * count * 2);
  print_row("Toeplitz C=1024 forward + backward", median_ms([&] {
              forward();
              lcsm::backward<E>(dev, op, xv, yv, lcsm::view(static_cast<E*>(dx.p), {1, n, C}),
                                lcsm::view(static_cast<E*>(da.p), {C, n}));
            }),
            static_cast<double>(n), 8.0 * count * 2);
  forward();
  std::vector<E> hy(static_cast<std::size_t>(count));
  LCSM_CUDA_CHECK(cudaMemcpy(hy.data(), y.p, count * 2, cudaMemcpyDeviceToHost));
  std::vector<double> xd(n * 2), ad(2 * n), got, want;
  for (int j = 0; j < 2; ++j)
    for (std::int64_t t = 0; t < n; ++t) {
      xd[t * 2 + j] = __bfloat162float(hx[t * C + checked[j]]);
      ad[j * n + t] = __bfloat162float(ha[checked[j] * n + t]);
    }
  lcsm::ToeplitzConvolution<double> ref;
  ref.coefficients = lcsm::view(static_cast<const double*>(ad.data()), {2, n});
  const auto xdv = lcsm::view(static_cast<const double*>(xd.data()), {1, n, 2});
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < 2; ++j) {
      const std::int64_t t = sampled_row(n, r);
      got.push_back(__bfloat162float(hy[t * C + checked[j]]));
      want.push_back(lcsm::reference::toeplitz_output(ref, xdv, 0, 0, n, t, j));
    }
  std::printf("%-36s %10.3e   (rel RMS of %d rows of 2 channels vs float64)\n", "Toeplitz error", rel_rms(got, want),
              kRows);
}

}  // namespace

void other_families(std::int64_t T) {
  std::printf("\n%-36s %10s %14s %12s\n", "call (B=1, H=16, K=V=128, bf16)", "ms", "tokens/s", "GB/s");
  const Inputs in(T);
  gated<false>(in);
  gated<true>(in);
  cosformer(in);
  toeplitz(T);
  std::printf(
      "(GB/s: q, k, v read and o written once; a training step also reads q, k, v, dO and writes dq, dk, dv\n"
      " once; decode reads and writes the state; Toeplitz reads x and a and writes y)\n");
}

}  // namespace demo
