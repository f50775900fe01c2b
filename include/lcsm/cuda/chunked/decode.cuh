// Decode: one CTA per (sequence, head); for each token, S = D S + k v^T and o = scale * S^T q, with D
// lambda_h (head), exp(g_t) (scalar gate) or diag(exp(g_t)) (vector gate). Device code.
//
// Memory-bound on the state (read and written once per group of tokens), so the design is about
// bytes in flight: a thread owns 4 value columns (one float4) of every `bands`-th row, and issues
// the loads of all its rows of a batch (kStepRows of them, 64 KB per CTA for a 128 x 128 state)
// before it uses any. The group's q, k, v (and decays) are staged in shared memory first (as float;
// every lane of a warp reads the same row element: a broadcast), and the per-band partial outputs
// are summed with shared-memory atomics. Tokens are taken in groups of p.token_group (sized so the
// staging fits), each group one pass over the state.
//
// Measured and dropped (H100, 2026-12-07, docs/performance.md): a persistent grid whose CTAs copy
// the next pair's state by cp.async while computing this one (B = 64: 58.8 against 54.5 us).
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/cosine.cuh"
#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/dtype.cuh"

namespace lcsm::cuda::detail {

constexpr int kStepThreads = 256;
constexpr int kStepRows = 16;  // rows per thread per batch: 16 float4 = 256 bytes in flight each

// Floats staged per token: q, k, v, the output sums, and the decays (cosFormer: its features
// [phi(q) cos, phi(q) sin], [phi(k) cos, phi(k) sin] and [v, 1], the state being [2K, V + 1]).
inline int step_floats_per_token(DecayKind decay, int key_dim, int value_dim) {
  if (decay == DecayKind::cosine) return 4 * key_dim + 2 * (value_dim + 1);
  return 2 * key_dim + 2 * value_dim + gate_width(decay, key_dim, value_dim);
}

template <class T, DecayKind kDecay>
__global__ void __launch_bounds__(kStepThreads, 2) step_kernel(const __grid_constant__ RecurrenceParams p) {
  extern __shared__ float step_smem[];
  constexpr bool kCosine = kDecay == DecayKind::cosine;
  // The state's rows and columns (cosFormer: 2K and V + 1) and q's and v's widths.
  const int Kin = p.key_dim, Vin = p.value_dim, G = p.token_group;
  const int K = kCosine ? 2 * Kin : Kin, V = kCosine ? Vin + 1 : Vin;
  float* sq = step_smem;   // [G][K]  q * scale
  float* sk = sq + G * K;  // [G][K]
  float* sv = sk + G * K;  // [G][V]
  float* so = sv + G * V;  // [G][V]  output sums
  float* sd = so + G * V;  // [G] or [G][K]: the decays exp(g) (gates)
  const std::int64_t b = blockIdx.x / p.heads;
  const int h = blockIdx.x % p.heads;
  const int groups = (V + 3) / 4;           // float4 column groups
  const int bands = kStepThreads / groups;  // rows processed side by side
  const int group = threadIdx.x % groups, band = threadIdx.x / groups;
  const bool active = band < bands;
  const int c0 = group * 4;
  const bool full = p.state_vectorized && c0 + 3 < V;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* o = static_cast<T*>(p.o);
  const float head_decay = kDecay == DecayKind::head ? static_cast<float>(exp(p.log_decay[h])) : 1.f;
  float* state = p.state + b * p.ss.s0 + h * p.ss.s1;
  const float* gate = kDecay == DecayKind::head || kCosine ? nullptr : p.log_gate + b * p.sg.s0 + h * p.sg.s2;
  [[maybe_unused]] CosSequence cos_seq{};
  if constexpr (kCosine) cos_seq = cos_sequence(p, b, p.time);

  for (std::int64_t t0 = 0; t0 < p.time; t0 += G) {
    const int nt = static_cast<int>(p.time - t0 < G ? p.time - t0 : G);
    for (int i = threadIdx.x; i < nt * K; i += kStepThreads) {
      const std::int64_t t = t0 + i / K;
      const int r = i % K;
      if constexpr (kCosine) {  // row r < K of the features: phi(x[r mod K]) times cos or sin
        const int col = r < Kin ? r : r - Kin;
        const float2 a = cos_angle(cos_seq, t);
        const float f = r < Kin ? a.x : a.y;
        sq[i] = f * cos_phi(p.relu, to_float(q[b * p.sq.s0 + t * p.sq.s1 + h * p.sq.s2 + col * p.sq.s3]));
        sk[i] = f * cos_phi(p.relu, to_float(k[b * p.sk.s0 + t * p.sk.s1 + h * p.sk.s2 + col * p.sk.s3]));
        continue;
      }
      sq[i] = p.scale * to_float(q[b * p.sq.s0 + t * p.sq.s1 + h * p.sq.s2 + r * p.sq.s3]);
      sk[i] = to_float(k[b * p.sk.s0 + t * p.sk.s1 + h * p.sk.s2 + r * p.sk.s3]);
      if constexpr (kDecay == DecayKind::key) sd[i] = expf(gate[t * p.sg.s1 + r * p.sg.s3]);
    }
    if constexpr (kDecay == DecayKind::token)
      for (int i = threadIdx.x; i < nt; i += kStepThreads) sd[i] = expf(gate[(t0 + i) * p.sg.s1]);
    for (int i = threadIdx.x; i < nt * V; i += kStepThreads) {
      const std::int64_t t = t0 + i / V;
      const int c = i % V;
      sv[i] = c < Vin ? to_float(v[b * p.sv.s0 + t * p.sv.s1 + h * p.sv.s2 + c * p.sv.s3]) : 1.f;  // [v, 1]
      so[i] = 0.f;
    }
    __syncthreads();
    if (active) {
      for (int r0 = band; r0 < K; r0 += kStepRows * bands) {
        float s[kStepRows][4];
#pragma unroll
        for (int i = 0; i < kStepRows; ++i) {  // every load of the batch in flight first
          const int r = r0 + i * bands;
          const float* row = state + r * p.ss.s2 + c0 * p.ss.s3;
          if (r < K && full) {
            const float4 x = *reinterpret_cast<const float4*>(row);
            s[i][0] = x.x, s[i][1] = x.y, s[i][2] = x.z, s[i][3] = x.w;
          } else {
#pragma unroll
            for (int c = 0; c < 4; ++c) s[i][c] = r < K && c0 + c < V ? row[c * p.ss.s3] : 0.f;
          }
        }
        for (int t = 0; t < nt; ++t) {
          float vv[4], acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int c = 0; c < 4; ++c) vv[c] = c0 + c < V ? sv[t * V + c0 + c] : 0.f;
          const float token_decay = kDecay == DecayKind::token ? sd[t] : head_decay;
#pragma unroll
          for (int i = 0; i < kStepRows; ++i) {
            const int r = r0 + i * bands;
            const float kr = r < K ? sk[t * K + r] : 0.f, qr = r < K ? sq[t * K + r] : 0.f;
            const float d = kDecay == DecayKind::key ? (r < K ? sd[t * K + r] : 0.f) : token_decay;
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              s[i][c] = d * s[i][c] + kr * vv[c];
              acc[c] += qr * s[i][c];
            }
          }
#pragma unroll
          for (int c = 0; c < 4; ++c)
            if (c0 + c < V) atomicAdd(&so[t * V + c0 + c], acc[c]);
        }
#pragma unroll
        for (int i = 0; i < kStepRows; ++i) {
          const int r = r0 + i * bands;
          if (r >= K) break;
          float* row = state + r * p.ss.s2 + c0 * p.ss.s3;
          if (full) {
            *reinterpret_cast<float4*>(row) = make_float4(s[i][0], s[i][1], s[i][2], s[i][3]);
          } else {
#pragma unroll
            for (int c = 0; c < 4; ++c)
              if (c0 + c < V) row[c * p.ss.s3] = s[i][c];
          }
        }
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nt * Vin; i += kStepThreads) {
      const int tt = i / Vin, c = i % Vin;
      float x = so[tt * V + c];
      if constexpr (kCosine) {  // num / max(den, eps), the denominator in column V (NaN stays NaN)
        const float den = so[tt * V + Vin];
        x /= den < p.eps ? p.eps : den;
      }
      o[b * p.so.s0 + (t0 + tt) * p.so.s1 + h * p.so.s2 + c * p.so.s3] = from_float<T>(x);
    }
    __syncthreads();  // the staging is reused by the next group
  }
}

}  // namespace lcsm::cuda::detail
