// The GPU half of the demo: lightning attention on CUDA at T = 65536, H = 16, K = V = 128, bf16
// inputs and outputs, fp32 state. Prints time, tokens/s and bandwidth for the forward (exact and
// fast precision) and for a decode step of 64 sequences, and the error of sampled rows and of the
// final state against the float64 reference; then the other families (demo_cuda_families.cu).
//   usage: demo_cuda [--T N]
#include <cuda_bf16.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "demo_cuda.cuh"
#include "lcsm/cuda.cuh"
#include "lcsm/reference/lightning.hpp"

using demo::DeviceMemory;
using demo::median_ms;
using demo::rel_rms;

int main(int argc, char** argv) {
  std::int64_t T = 65536;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--T") T = std::atoll(argv[i + 1]);
  const std::int64_t B = 1, H = 16, D = 128, n = B * T * H * D;
  int device = 0;
  cudaDeviceProp prop{};
  LCSM_CUDA_CHECK(cudaGetDevice(&device));
  LCSM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  std::printf("lcsm demo on the GPU: %s, lightning attention, B=%lld T=%lld H=%lld K=V=%lld, bf16, fp32 state\n",
              prop.name, static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(H),
              static_cast<long long>(D));

  // Inputs: N(0, 1) rounded to bf16, on the host (kept for the reference) and on the device.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  std::vector<__nv_bfloat16> hq(n), hk(n), hv(n);
  for (auto* x : {&hq, &hk, &hv})
    for (auto& e : *x) e = __float2bfloat16_rn(normal(rng));
  DeviceMemory q(n * 2), k(n * 2), v(n * 2), o(n * 2), state(H * D * D * 4);
  LCSM_CUDA_CHECK(cudaMemcpy(q.p, hq.data(), n * 2, cudaMemcpyHostToDevice));
  LCSM_CUDA_CHECK(cudaMemcpy(k.p, hk.data(), n * 2, cudaMemcpyHostToDevice));
  LCSM_CUDA_CHECK(cudaMemcpy(v.p, hv.data(), n * 2, cudaMemcpyHostToDevice));
  auto view = [&](void* p) { return lcsm::view(static_cast<__nv_bfloat16*>(p), {B, T, H, D}); };
  const auto sv = lcsm::view(static_cast<float*>(state.p), {B, H, D, D});

  lcsm::LightningAttention op;
  op.log_decay = lcsm::decay::minimax(static_cast<int>(H), 0, 80);
  const std::size_t ws_bytes = lcsm::cuda::forward_workspace_bytes<__nv_bfloat16>(op, view(q.p), view(v.p));
  DeviceMemory ws(ws_bytes);
  lcsm::cuda::Device dev{nullptr, {ws.p, ws_bytes}};
  const double bytes = 4.0 * n * 2;
  std::printf("\n%-28s %10s %14s %12s\n", "call", "ms", "tokens/s", "GB/s");
  for (auto precision : {lcsm::LightningAttention::Precision::exact, lcsm::LightningAttention::Precision::fast}) {
    op.precision = precision;
    const double ms = median_ms([&] {
      lcsm::forward<__nv_bfloat16>(dev, op, view(q.p), view(k.p), view(v.p), view(o.p), {{}, sv});
    });
    std::printf("%-28s %10.3f %14.3e %12.1f\n",
                precision == lcsm::LightningAttention::Precision::exact ? "forward (exact)" : "forward (fast)", ms,
                T * B / (ms * 1e-3), bytes / (ms * 1e-3) / 1e9);
  }
  op.precision = lcsm::LightningAttention::Precision::exact;
  lcsm::forward<__nv_bfloat16>(dev, op, view(q.p), view(k.p), view(v.p), view(o.p), {{}, sv});
  std::vector<__nv_bfloat16> ho(n);
  std::vector<float> hs(H * D * D);
  LCSM_CUDA_CHECK(cudaMemcpy(ho.data(), o.p, n * 2, cudaMemcpyDeviceToHost));
  LCSM_CUDA_CHECK(cudaMemcpy(hs.data(), state.p, hs.size() * 4, cudaMemcpyDeviceToHost));

  {  // Decode: one token for each of 64 sequences.
    const std::int64_t Bd = 64;
    DeviceMemory dq(Bd * H * D * 2), dk(Bd * H * D * 2), dv(Bd * H * D * 2), dout(Bd * H * D * 2),
        ds(Bd * H * D * D * 4);
    LCSM_CUDA_CHECK(cudaMemset(dq.p, 0x3c, Bd * H * D * 2));
    LCSM_CUDA_CHECK(cudaMemset(dk.p, 0x3c, Bd * H * D * 2));
    LCSM_CUDA_CHECK(cudaMemset(dv.p, 0x3c, Bd * H * D * 2));
    LCSM_CUDA_CHECK(cudaMemset(ds.p, 0, Bd * H * D * D * 4));
    auto v1 = [&](void* p) { return lcsm::view(static_cast<__nv_bfloat16*>(p), {Bd, 1, H, D}); };
    const double ms = median_ms([&] {
      lcsm::step<__nv_bfloat16>(lcsm::cuda::Device{}, op, v1(dq.p), v1(dk.p), v1(dv.p), v1(dout.p),
                                lcsm::view(static_cast<float*>(ds.p), {Bd, H, D, D}));
    });
    std::printf("%-28s %10.4f %14.3e %12.1f\n", "decode step, 64 sequences", ms, Bd / (ms * 1e-3),
                2.0 * Bd * H * D * D * 4 / (ms * 1e-3) / 1e9);
  }

  // Error against float64 on two heads (the strongest and the weakest decay): 64 sampled rows each
  // and their final states, from the reference on double copies of those heads.
  std::printf("\n%-10s %12s %14s %18s\n", "head", "g", "rows rel RMS", "final state rel RMS");
  for (std::int64_t h : {std::int64_t{0}, H - 1}) {
    std::vector<double> q1(T * D), k1(T * D), v1(T * D), o1(T * D), s1(D * D);
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t d = 0; d < D; ++d) {
        const std::int64_t i = (t * H + h) * D + d;
        q1[t * D + d] = __bfloat162float(hq[i]);
        k1[t * D + d] = __bfloat162float(hk[i]);
        v1[t * D + d] = __bfloat162float(hv[i]);
      }
    lcsm::LightningAttention one = op;
    one.log_decay = {op.log_decay[h]};
    one.scale = op.scale_for(D);
    auto d1 = [&](std::vector<double>& x) { return lcsm::view(x.data(), {1, T, 1, D}); };
    lcsm::reference::lightning_forward(one, d1(q1), d1(k1), d1(v1), d1(o1), {}, lcsm::view(s1.data(), {1, 1, D, D}));
    std::vector<double> got, want, sgot(s1.size());
    for (int r = 0; r < 64; ++r) {
      const std::int64_t t = (T - 1) * r / 63;
      for (std::int64_t d = 0; d < D; ++d) {
        got.push_back(__bfloat162float(ho[(t * H + h) * D + d]));
        want.push_back(o1[t * D + d]);
      }
    }
    for (std::int64_t i = 0; i < D * D; ++i) sgot[i] = hs[h * D * D + i];
    std::printf("%-10lld %12.3e %14.3e %18.3e\n", static_cast<long long>(h), op.log_decay[h], rel_rms(got, want),
                rel_rms(sgot, s1));
  }
  std::printf("(bf16 outputs: the float64 result rounded to bf16 is itself ~1.7e-3 off)\n");
  demo::other_families(T);
  return 0;
}
