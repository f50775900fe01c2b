#include <cuda_bf16.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "cuda/cuda_checks.hpp"
#include "cuda/device_buffer.cuh"
#include "cuda/fill.cuh"
#include "lcsm/cuda.cuh"
#include "lcsm/reference/eos.hpp"

namespace lcsm::test {
LongRunResult run_long_sequence(LongFamily family, std::int64_t T, int H, int check_heads, std::uint64_t seed) {
  constexpr int D = 128;
  const auto start = std::chrono::steady_clock::now();
  const std::int64_t n = T * H * D;
  const std::int64_t gate_width = family == LongFamily::vector_gate ? D : 1;
  DeviceBuffer q(n * 2), k(n * 2), v(n * 2), o(n * 2), sT(static_cast<std::size_t>(H) * D * D * 4);
  DeviceBuffer gate(family == LongFamily::lightning ? 0 : T * H * gate_width * 4);
  fill_normal<<<4096, 256>>>(static_cast<__nv_bfloat16*>(q.get()), n, seed);
  fill_normal<<<4096, 256>>>(static_cast<__nv_bfloat16*>(k.get()), n, seed + 1);
  fill_normal<<<4096, 256>>>(static_cast<__nv_bfloat16*>(v.get()), n, seed + 2);
  if (family != LongFamily::lightning)
    fill_log_gate<><<<4096, 256>>>(static_cast<float*>(gate.get()), T * H * gate_width, seed + 3);
  LCSM_CUDA_CHECK(cudaGetLastError());
  LightningAttention light;
  light.log_decay = decay::minimax(H, 0, 80);
  ScalarGatedAttention<__nv_bfloat16> scalar;
  scalar.log_gate = lcsm::view(static_cast<const float*>(gate.get()), {1, T, H});
  VectorGatedAttention<__nv_bfloat16> vector;
  vector.log_gate = lcsm::view(static_cast<const float*>(gate.get()), {1, T, H, D});
  auto view = [&](const DeviceBuffer& b) { return lcsm::view(static_cast<__nv_bfloat16*>(b.get()), {1, T, H, D}); };
  const auto qv = view(q), kv = view(k), vv = view(v), ov = view(o);
  const StateIO<float> states{View<const float, 4>{}, lcsm::view(static_cast<float*>(sT.get()), {1, H, D, D})};
  auto run = [&](const auto& op) {
    const DeviceBuffer workspace(cuda::forward_workspace_bytes<__nv_bfloat16>(op, qv, vv));
    lcsm::forward<__nv_bfloat16>(cuda::Device{nullptr, {workspace.get(), workspace.bytes()}}, op, qv, kv, vv, ov,
                                 states);
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  };
  if (family == LongFamily::lightning) run(light);
  else if (family == LongFamily::scalar_gate) run(scalar);
  else run(vector);

  // Sampled rows: every head in check_heads, 64 positions spread over the sequence plus the last.
  std::vector<std::int64_t> positions;
  for (int i = 0; i < 64; ++i) positions.push_back((T - 1) * i / 63);
  LongRunResult result{};
  std::vector<double> got, want, state_got, state_want;
  std::vector<float> state_host(static_cast<std::size_t>(H) * D * D);
  LCSM_CUDA_CHECK(cudaMemcpy(state_host.data(), sT.get(), sT.bytes(), cudaMemcpyDeviceToHost));
  for (int hi = 0; hi < check_heads; ++hi) {
    const int h = (hi * (H - 1)) / std::max(1, check_heads - 1);
    // One head's q, k, v, o rows (and gates), brought back with strided copies.
    std::vector<std::uint16_t> hq(T * D), hk(T * D), hv(T * D), ho(T * D);
    std::vector<float> hg(family == LongFamily::lightning ? 0 : T * gate_width);
    auto fetch = [&](void* dst, const DeviceBuffer& src, std::size_t row_bytes) {
      LCSM_CUDA_CHECK(cudaMemcpy2D(dst, row_bytes,
                                   static_cast<char*>(src.get()) + static_cast<std::size_t>(h) * row_bytes,
                                   static_cast<std::size_t>(H) * row_bytes, row_bytes, T, cudaMemcpyDeviceToHost));
    };
    fetch(hq.data(), q, D * 2);
    fetch(hk.data(), k, D * 2);
    fetch(hv.data(), v, D * 2);
    fetch(ho.data(), o, D * 2);
    if (!hg.empty()) fetch(hg.data(), gate, gate_width * 4);
    // float64 recurrence, value columns split over threads; decay per (token, key row).
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    const double head_decay = std::exp(light.log_decay[h]);
    const int threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
    std::vector<double> out(positions.size() * D), final_state(D * D);
    std::vector<std::thread> pool;
    for (int w = 0; w < threads; ++w)
      pool.emplace_back([&, w] {
        const int c0 = D * w / threads, c1 = D * (w + 1) / threads, width = c1 - c0;
        std::vector<double> S(static_cast<std::size_t>(D) * width, 0.0), kr(D), qr(D), decay(D);
        std::size_t next = 0;
        for (std::int64_t t = 0; t < T; ++t) {
          for (int d = 0; d < D; ++d) kr[d] = bf16_to_float(hk[t * D + d]);
          if (family == LongFamily::lightning) std::fill(decay.begin(), decay.end(), head_decay);
          else if (family == LongFamily::scalar_gate) std::fill(decay.begin(), decay.end(), std::exp(double(hg[t])));
          else
            for (int d = 0; d < D; ++d) decay[d] = std::exp(static_cast<double>(hg[t * D + d]));
          for (int d = 0; d < D; ++d)
            for (int c = 0; c < width; ++c)
              S[d * width + c] = decay[d] * S[d * width + c] + kr[d] * bf16_to_float(hv[t * D + c0 + c]);
          if (next < positions.size() && positions[next] == t) {
            for (int d = 0; d < D; ++d) qr[d] = bf16_to_float(hq[t * D + d]);
            for (int c = 0; c < width; ++c) {
              double acc = 0;
              for (int d = 0; d < D; ++d) acc += S[d * width + c] * qr[d];
              out[next * D + c0 + c] = scale * acc;
            }
            ++next;
          }
        }
        for (int d = 0; d < D; ++d)
          for (int c = 0; c < width; ++c) final_state[d * D + c0 + c] = S[d * width + c];
      });
    for (auto& th : pool) th.join();
    for (std::size_t i = 0; i < positions.size(); ++i)
      for (int c = 0; c < D; ++c) {
        got.push_back(bf16_to_float(ho[positions[i] * D + c]));
        want.push_back(out[i * D + c]);
      }
    for (int i = 0; i < D * D; ++i) {
      state_got.push_back(state_host[static_cast<std::size_t>(h) * D * D + i]);
      state_want.push_back(final_state[i]);
    }
  }
  auto rel_rms = [](const std::vector<double>& a, const std::vector<double>& b) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (std::isnan(a[i])) return std::numeric_limits<double>::quiet_NaN();
      num += (a[i] - b[i]) * (a[i] - b[i]);
      den += b[i] * b[i];
    }
    return std::sqrt(num / den);
  };
  std::vector<double> rounded(want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const float f = static_cast<float>(want[i]);
    rounded[i] = static_cast<double>(__bfloat162float(__float2bfloat16_rn(f)));
  }
  result.output_rel_rms = rel_rms(got, want);
  result.output_yardstick = rel_rms(rounded, want);
  result.state_rel_rms = rel_rms(state_got, state_want);
  result.sampled_rows = static_cast<std::int64_t>(positions.size()) * check_heads;
  result.sampled_output = got;
  result.sampled_reference = want;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::size_t toeplitz_forward_workspace(int kernels) {
  const std::int64_t n = 32768, C = 4;
  DeviceBuffer x(n * C * 4), a(n * C * 4);
  ToeplitzConvolution<float> op;
  op.coefficients = lcsm::view(static_cast<const float*>(a.get()), {C, n});
  const cuda::Kernels which[] = {cuda::Kernels::automatic, cuda::Kernels::portable, cuda::Kernels::fused_fft};
  return cuda::forward_workspace_bytes<float>(op, lcsm::view(static_cast<const float*>(x.get()), {1, n, C}), {},
                                              which[kernels]);
}

bool sm90_tile_map_encodes(std::int64_t B, std::int64_t T, int H, int D) {
  const DeviceBuffer x(static_cast<std::size_t>(B * T * H * D) * 2);
  const cuda::detail::Strides4 s{T * H * D, H * D, D, 1};
  CUtensorMap map;
  return cuda::detail::tile_map(map, x.get(), s, B, T, H, D);
}

bool sm90_tile_map_refuses_wide_heads() {
  // Heads-major [B, H, T, D] with T = 2^21, D = 128: head h's first column is h x 2^28, past an int
  // for h >= 8. No memory is touched: the map is refused before it is encoded.
  alignas(16) static const std::uint16_t row[8] = {};
  const std::int64_t T = std::int64_t{1} << 21, D = 128, H = 16;
  const cuda::detail::Strides4 s{H * T * D, D, T * D, 1};
  CUtensorMap map;
  return !cuda::detail::tile_map(map, row, s, 1, T, static_cast<int>(H), static_cast<int>(D));
}

bool sm90_tma_loads_on() { return LCSM_CUDA_SM90_TMA != 0; }

FallbackCount vector_gate_fallbacks(std::int64_t T, int H, bool steep_token) {
  using cuda::detail::DecayKind;
  if (!cuda::detail::sm90_kernels_available<DecayKind::key>()) return {0, -1};
  constexpr int D = 128;
  const std::int64_t n = T * H * D;
  DeviceBuffer q(n * 2), k(n * 2), v(n * 2), o(n * 2), gate(n * 4);
  fill_normal<<<1024, 256>>>(static_cast<__nv_bfloat16*>(q.get()), n, 11);
  fill_normal<<<1024, 256>>>(static_cast<__nv_bfloat16*>(k.get()), n, 12);
  fill_normal<<<1024, 256>>>(static_cast<__nv_bfloat16*>(v.get()), n, 13);
  fill_log_gate<<<1024, 256>>>(static_cast<float*>(gate.get()), n, 14);
  LCSM_CUDA_CHECK(cudaGetLastError());
  if (steep_token) {
    const std::vector<float> strong(D, -60.f);  // 2^-86: past the separable range alone
    LCSM_CUDA_CHECK(
        cudaMemcpy(static_cast<float*>(gate.get()) + (T / 2) * H * D, strong.data(), D * 4, cudaMemcpyHostToDevice));
  }
  VectorGatedAttention<__nv_bfloat16> op;
  op.log_gate = lcsm::view(static_cast<const float*>(gate.get()), {1, T, H, D});
  auto view = [&](const DeviceBuffer& b) { return lcsm::view(static_cast<__nv_bfloat16*>(b.get()), {1, T, H, D}); };
  const auto qv = view(q), vv = view(v);
  const DeviceBuffer workspace(cuda::forward_workspace_bytes<__nv_bfloat16>(op, qv, vv));
  lcsm::forward<__nv_bfloat16>(cuda::Device{nullptr, {workspace.get(), workspace.bytes()}}, op, qv, view(k), vv,
                               view(o));
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  // The flags' place in the workspace, as set_plan puts them (chunked/run.cuh).
  const auto plan = cuda::detail::plan_forward<DecayKind::key>(lcsm::detail::ProblemShape{1, T, H, D, D, 1}, false);
  const std::int64_t ctas = plan.max_items * H * plan.value_blocks;
  std::vector<int> flags(static_cast<std::size_t>(ctas));
  LCSM_CUDA_CHECK(cudaMemcpy(
      flags.data(),
      static_cast<const char*>(workspace.get()) + plan.states_bytes + plan.log_decay_bytes + plan.offsets_bytes,
      flags.size() * 4, cudaMemcpyDeviceToHost));
  int flagged = 0;
  for (int f : flags) flagged += f != 0;
  return {flagged, static_cast<int>(ctas)};
}

std::string forward_without_workspace_message() {
  const std::int64_t T = 1 << 16, H = 2, D = 64;
  DeviceBuffer q(T * H * D * 2), o(T * H * D * 2);
  LightningAttention op;
  op.log_decay = decay::alibi(H);
  const auto qv = lcsm::view(static_cast<__nv_bfloat16*>(q.get()), {1, T, H, D});
  const auto ov = lcsm::view(static_cast<__nv_bfloat16*>(o.get()), {1, T, H, D});
  try {
    lcsm::forward<__nv_bfloat16>(cuda::Device{}, op, qv, qv, qv, ov);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string forward_with_large_key_dim_message() {
  const std::int64_t T = 4, H = 1, K = 320, V = 64;
  DeviceBuffer q(T * H * K * 2), v(T * H * V * 2), o(T * H * V * 2);
  LightningAttention op;
  op.log_decay = decay::alibi(H);
  const auto qv = lcsm::view(static_cast<__nv_bfloat16*>(q.get()), {1, T, H, K});
  try {
    lcsm::forward<__nv_bfloat16>(cuda::Device{}, op, qv, qv,
                                 lcsm::view(static_cast<__nv_bfloat16*>(v.get()), {1, T, H, V}),
                                 lcsm::view(static_cast<__nv_bfloat16*>(o.get()), {1, T, H, V}));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string cosformer_error_message(const std::string& which) {
  const std::int64_t B = 2, T = 4, H = 1, K = which == "k136" ? 136 : 16, V = which == "backward_v257" ? 257 : 16;
  DeviceBuffer q(B * T * H * K * 2), v(B * T * H * V * 2), o(B * T * H * V * 2), s(B * H * 2 * K * (V + 1) * 4),
      pos(3 * 8);
  CosFormerAttention op;
  const auto qv = lcsm::view(static_cast<const __nv_bfloat16*>(q.get()), {B, T, H, K});
  const auto vv = lcsm::view(static_cast<const __nv_bfloat16*>(v.get()), {B, T, H, V});
  const auto ov = lcsm::view(static_cast<__nv_bfloat16*>(o.get()), {B, T, H, V});
  const auto positions = [&](std::int64_t n) { return lcsm::view(static_cast<const index_t*>(pos.get()), {n}); };
  try {
    if (which == "backward_v257" || which == "backward_workspace") {
      const auto dq = lcsm::view(static_cast<__nv_bfloat16*>(o.get()), {B, T, H, K});
      DeviceBuffer dk(B * T * H * K * 2), dv(B * T * H * V * 2);
      DeviceBuffer workspace(which == "backward_workspace" ? 1024 : 0);
      lcsm::backward<__nv_bfloat16>(cuda::Device{nullptr, {workspace.get(), workspace.bytes()}}, op, qv, qv, vv, vv, dq,
                                    lcsm::view(static_cast<__nv_bfloat16*>(dk.get()), {B, T, H, K}),
                                    lcsm::view(static_cast<__nv_bfloat16*>(dv.get()), {B, T, H, V}));
    } else if (which == "k136" || which == "positions_shape" || which == "short_m") {
      if (which == "positions_shape") op.positions = positions(3);
      if (which == "short_m") op.length = 3;
      lcsm::forward<__nv_bfloat16>(cuda::Device{}, op, qv, qv, vv, ov);
    } else {
      op.length = 100;
      op.positions = positions(B);
      if (which == "no_length") op.length.reset();
      if (which == "no_positions") op.positions = {};
      if (which == "non_causal_step") op.causal = false;
      lcsm::step<__nv_bfloat16>(cuda::Device{}, op, qv, qv, vv, ov,
                                lcsm::view(static_cast<float*>(s.get()), {B, H, 2 * K, V + 1}));
    }
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string backward_error_message(bool large_value_dim) {
  const std::int64_t T = 64, H = 2, K = 64, V = large_value_dim ? 320 : 64;
  DeviceBuffer q(T * H * K * 2), v(T * H * V * 2), dq(T * H * K * 2), dk(T * H * K * 2), dv(T * H * V * 2), dg(H * 4);
  LightningAttention op;
  op.log_decay = decay::alibi(H);
  const auto qv = lcsm::view(static_cast<const __nv_bfloat16*>(q.get()), {1, T, H, K});
  const auto vv = lcsm::view(static_cast<const __nv_bfloat16*>(v.get()), {1, T, H, V});
  try {
    lcsm::backward<__nv_bfloat16>(cuda::Device{}, op, qv, qv, vv, vv,
                                  lcsm::view(static_cast<__nv_bfloat16*>(dq.get()), {1, T, H, K}),
                                  lcsm::view(static_cast<__nv_bfloat16*>(dk.get()), {1, T, H, K}),
                                  lcsm::view(static_cast<__nv_bfloat16*>(dv.get()), {1, T, H, V}), {},
                                  lcsm::view(static_cast<float*>(dg.get()), {H}));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace lcsm::test
