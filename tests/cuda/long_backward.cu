// The backward at long T against a float64 recurrence on sampled rows (cuda_checks.hpp).
#include <cuda_bf16.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "cuda/cuda_checks.hpp"
#include "cuda/device_buffer.cuh"
#include "cuda/fill.cuh"
#include "lcsm/cuda.cuh"

namespace lcsm::test {
namespace {

double relative_rms(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::quiet_NaN();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

double bf16_value(std::uint16_t b) { return bf16_to_float(b); }

double bf16_rounded(double x) { return __bfloat162float(__float2bfloat16_rn(static_cast<float>(x))); }

}  // namespace

LongBackwardResult run_long_backward(LongFamily family, std::int64_t T, int H, int check_heads, std::uint64_t seed) {
  constexpr int D = 128;
  const auto start = std::chrono::steady_clock::now();
  const bool gated = family != LongFamily::lightning, per_key = family == LongFamily::vector_gate;
  const int width = per_key ? D : 1;  // gates per token and head
  const std::int64_t n = T * H * D, states = static_cast<std::int64_t>(H) * D * D;
  DeviceBuffer q(n * 2), k(n * 2), v(n * 2), d_o(n * 2), dq(n * 2), dk(n * 2), dv(n * 2);
  DeviceBuffer d_final(states * 4), d_initial(states * 4), gate(gated ? T * H * width * 4 : 0),
      d_decay(gated ? T * H * width * 4 : H * 4);
  fill_normal<<<4096, 256>>>(static_cast<__nv_bfloat16*>(q.get()), n, seed);
  fill_normal<<<4096, 256>>>(static_cast<__nv_bfloat16*>(k.get()), n, seed + 1);
  fill_normal<<<4096, 256>>>(static_cast<__nv_bfloat16*>(v.get()), n, seed + 2);
  fill_normal<<<4096, 256>>>(static_cast<__nv_bfloat16*>(d_o.get()), n, seed + 3);
  // Lightning without dS_final (a training step's call, whose reversed passes then run the per-head
  // decay); the gates with it (the shifted-gate passes).
  const bool with_d_final = gated;
  if (with_d_final) fill_normal<<<4096, 256>>>(static_cast<float*>(d_final.get()), states, seed + 4);
  else LCSM_CUDA_CHECK(cudaMemset(d_final.get(), 0, states * 4));
  if (gated) fill_log_gate<><<<4096, 256>>>(static_cast<float*>(gate.get()), T * H * width, seed + 5);
  LCSM_CUDA_CHECK(cudaGetLastError());

  using E = __nv_bfloat16;
  auto view = [&](const DeviceBuffer& b) { return lcsm::view(static_cast<E*>(b.get()), {1, T, H, D}); };
  const auto qv = view(q), kv = view(k), vv = view(v), dov = view(d_o);
  const StateGrads<float> st{
      View<const float, 4>{},
      with_d_final ? lcsm::view(static_cast<const float*>(d_final.get()), {1, H, D, D}) : View<const float, 4>{},
      lcsm::view(static_cast<float*>(d_initial.get()), {1, H, D, D})};
  LightningAttention light;
  light.log_decay = decay::minimax(H, 0, 80);
  ScalarGatedAttention<E> scalar;
  scalar.log_gate = lcsm::view(static_cast<const float*>(gate.get()), {1, T, H});
  VectorGatedAttention<E> vector;
  vector.log_gate = lcsm::view(static_cast<const float*>(gate.get()), {1, T, H, D});
  if (per_key) {
    const auto dg = lcsm::view(static_cast<float*>(d_decay.get()), {1, T, H, D});
    const DeviceBuffer ws(cuda::backward_workspace_bytes<E>(vector, qv, vv, st, dg));
    lcsm::backward<E>(cuda::Device{nullptr, {ws.get(), ws.bytes()}}, vector, qv, kv, vv, dov, view(dq), view(dk),
                      view(dv), st, dg);
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  } else if (gated) {
    const auto dg = lcsm::view(static_cast<float*>(d_decay.get()), {1, T, H});
    const DeviceBuffer ws(cuda::backward_workspace_bytes<E>(scalar, qv, vv, st, dg));
    lcsm::backward<E>(cuda::Device{nullptr, {ws.get(), ws.bytes()}}, scalar, qv, kv, vv, dov, view(dq), view(dk),
                      view(dv), st, dg);
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  } else {
    const auto dg = lcsm::view(static_cast<float*>(d_decay.get()), {H});
    const DeviceBuffer ws(cuda::backward_workspace_bytes<E>(light, qv, vv, st, dg));
    lcsm::backward<E>(cuda::Device{nullptr, {ws.get(), ws.bytes()}}, light, qv, kv, vv, dov, view(dq), view(dk),
                      view(dv), st, dg);
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  }

  LongBackwardResult r{};
  {  // the decay gradient: finite everywhere (its value is checked by the suite at small T)
    std::vector<float> g(d_decay.bytes() / 4);
    LCSM_CUDA_CHECK(cudaMemcpy(g.data(), d_decay.get(), d_decay.bytes(), cudaMemcpyDeviceToHost));
    r.decay_gradient_finite = std::all_of(g.begin(), g.end(), [](float x) { return std::isfinite(x); });
  }
  std::vector<float> dfinal_host(states), dinit_host(states);
  LCSM_CUDA_CHECK(cudaMemcpy(dfinal_host.data(), d_final.get(), states * 4, cudaMemcpyDeviceToHost));
  LCSM_CUDA_CHECK(cudaMemcpy(dinit_host.data(), d_initial.get(), states * 4, cudaMemcpyDeviceToHost));

  std::vector<std::int64_t> positions;
  for (int i = 0; i < 64; ++i) positions.push_back((T - 1) * i / 63);
  const std::size_t P = positions.size();
  std::vector<double> got[3], want[3], dinit_got, dinit_want;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int hi = 0; hi < check_heads; ++hi) {
    const int h = (hi * (H - 1)) / std::max(1, check_heads - 1);
    std::vector<std::uint16_t> hq(T * D), hk(T * D), hv(T * D), hdo(T * D), hdq(T * D), hdk(T * D), hdv(T * D);
    std::vector<float> hg(gated ? T * width : 0);
    auto fetch = [&](void* dst, const DeviceBuffer& src, std::size_t row_bytes) {
      LCSM_CUDA_CHECK(cudaMemcpy2D(dst, row_bytes,
                                   static_cast<char*>(src.get()) + static_cast<std::size_t>(h) * row_bytes,
                                   static_cast<std::size_t>(H) * row_bytes, row_bytes, T, cudaMemcpyDeviceToHost));
    };
    fetch(hq.data(), q, D * 2), fetch(hk.data(), k, D * 2), fetch(hv.data(), v, D * 2), fetch(hdo.data(), d_o, D * 2);
    fetch(hdq.data(), dq, D * 2), fetch(hdk.data(), dk, D * 2), fetch(hdv.data(), dv, D * 2);
    if (gated) fetch(hg.data(), gate, 4 * width);
    auto decay_of = [&](std::int64_t t, int d) {  // token t's decay of key row d
      return gated ? std::exp(static_cast<double>(hg[t * width + (per_key ? d : 0)])) : std::exp(light.log_decay[h]);
    };
    // float64, value columns split over threads: dq and dk sum over columns (per-thread partials),
    // dv and the initial-state gradient are per column.
    const int threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
    std::vector<std::vector<double>> part_dq(threads, std::vector<double>(P * D)), part_dk(part_dq);
    std::vector<double> ref_dv(P * D), ref_dinit(D * D);
    std::vector<std::thread> pool;
    for (int w = 0; w < threads; ++w)
      pool.emplace_back([&, w] {
        const int c0 = D * w / threads, c1 = D * (w + 1) / threads, width = c1 - c0;
        std::vector<double> S(static_cast<std::size_t>(D) * width, 0.0), x(D), y(width);
        std::size_t next = 0;
        for (std::int64_t t = 0; t < T; ++t) {  // S_t = e^{g_t} S_{t-1} + k_t v_t^T; dq_t = scale S_t dO_t
          for (int d = 0; d < D; ++d) x[d] = bf16_value(hk[t * D + d]);
          for (int c = 0; c < width; ++c) y[c] = bf16_value(hv[t * D + c0 + c]);
          for (int d = 0; d < D; ++d) {
            const double f = decay_of(t, d);
            for (int c = 0; c < width; ++c) S[d * width + c] = f * S[d * width + c] + x[d] * y[c];
          }
          while (next < P && positions[next] == t) {  // positions repeat when T < 64
            for (int d = 0; d < D; ++d) {
              double acc = 0;
              for (int c = 0; c < width; ++c) acc += S[d * width + c] * bf16_value(hdo[t * D + c0 + c]);
              part_dq[w][next * D + d] = scale * acc;
            }
            ++next;
          }
        }
        for (int d = 0; d < D; ++d)  // dS_{T-1} starts at dS_final
          for (int c = 0; c < width; ++c)
            S[d * width + c] = dfinal_host[(static_cast<std::size_t>(h) * D + d) * D + c0 + c];
        std::int64_t p = static_cast<std::int64_t>(P) - 1;
        for (std::int64_t t = T - 1; t >= 0; --t) {  // dS_t = e^{g_{t+1}} dS_{t+1} + scale q_t dO_t^T
          for (int d = 0; d < D; ++d) x[d] = scale * bf16_value(hq[t * D + d]);
          for (int c = 0; c < width; ++c) y[c] = bf16_value(hdo[t * D + c0 + c]);
          for (int d = 0; d < D; ++d) {
            const double f = t + 1 < T ? decay_of(t + 1, d) : 1.0;
            for (int c = 0; c < width; ++c) S[d * width + c] = f * S[d * width + c] + x[d] * y[c];
          }
          while (p >= 0 && positions[p] == t) {  // dk_t = dS_t v_t, dv_t = dS_t^T k_t
            for (int d = 0; d < D; ++d) {
              double acc = 0;
              for (int c = 0; c < width; ++c) acc += S[d * width + c] * bf16_value(hv[t * D + c0 + c]);
              part_dk[w][p * D + d] = acc;
            }
            for (int c = 0; c < width; ++c) {
              double acc = 0;
              for (int d = 0; d < D; ++d) acc += S[d * width + c] * bf16_value(hk[t * D + d]);
              ref_dv[p * D + c0 + c] = acc;
            }
            --p;
          }
        }
        for (int d = 0; d < D; ++d)
          for (int c = 0; c < width; ++c) ref_dinit[d * D + c0 + c] = decay_of(0, d) * S[d * width + c];
      });
    for (auto& th : pool) th.join();
    for (std::size_t i = 0; i < P; ++i)
      for (int d = 0; d < D; ++d) {
        double sq = 0, sk = 0;
        for (int w = 0; w < threads; ++w) sq += part_dq[w][i * D + d], sk += part_dk[w][i * D + d];
        const std::int64_t at = positions[i] * D + d;
        got[0].push_back(bf16_value(hdq[at])), want[0].push_back(sq);
        got[1].push_back(bf16_value(hdk[at])), want[1].push_back(sk);
        got[2].push_back(bf16_value(hdv[at])), want[2].push_back(ref_dv[i * D + d]);
      }
    for (int i = 0; i < D * D; ++i) {
      dinit_got.push_back(dinit_host[static_cast<std::size_t>(h) * D * D + i]);
      dinit_want.push_back(ref_dinit[i]);
    }
  }
  double* rms[3] = {&r.dq_rel_rms, &r.dk_rel_rms, &r.dv_rel_rms};
  for (int g = 0; g < 3; ++g) {
    *rms[g] = relative_rms(got[g], want[g]);
    std::vector<double> rounded(want[g].size());
    std::transform(want[g].begin(), want[g].end(), rounded.begin(), bf16_rounded);
    r.yardstick = std::max(r.yardstick, relative_rms(rounded, want[g]));
    r.sampled_gradients.insert(r.sampled_gradients.end(), got[g].begin(), got[g].end());
    r.sampled_reference.insert(r.sampled_reference.end(), want[g].begin(), want[g].end());
  }
  r.d_initial_rel_rms = relative_rms(dinit_got, dinit_want);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace lcsm::test
