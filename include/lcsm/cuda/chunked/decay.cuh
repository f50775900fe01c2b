// Decay policies of the chunked engine: how the factors of one chunk are formed. Per chunk of c
// tokens with G_i the cumulative log-decay through token i of the chunk (G_{-1} = 0):
//   output rows  O_i += exp(G_i) q_i S                   row(i)
//   scores       P_ij = exp(G_i - G_j) q_i . k_j, j <= i  mask(i, j)
//   state        S = exp(G_{c-1}) S + sum_j exp(G_{c-1} - G_j) k_j v_j^T   state(c), key(j, c)
// Every argument of an exponential is <= 0, so nothing overflows and a strong decay underflows to
// the zero it rounds to.
//   HeadDecay   lightning attention: G_i = (i + 1) g_h, a table of lambda^p per CTA.
//   TokenDecay  a scalar gate [B, T, H]: G from a per-warp scan of the chunk's gates in double.
//   key         a vector gate [B, T, H, K]: per-key factors, formed by the kernel itself
//               (chunked/key_gate_sm80.cuh).
//   value       a gate [B, T, H, V] along the state's value columns, S_t = S_{t-1} diag(e^{g_t}) +
//               k_t v_t^T: no family's forward, but the vector gate's backward passes for dq and dk
//               (chunked/value_gate_sm80.cuh).
//   cosine      cosFormer: no decay of the state, but the Toeplitz re-weighting cos(pi (i - j) / 2M)
//               as the score mask, with the feature map and the normaliser (chunked/cosine_sm80.cuh).
// Device code, except DecayKind and its traits.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/exp2.cuh"

namespace lcsm::cuda::detail {

constexpr double kLog2e = 1.4426950408889634;
// log2(e) as a float pair: kLog2eHi is the float nearest, kLog2eLo the rest (to 3e-16 relative).
constexpr float kLog2eHi = 1.4426950216293335f, kLog2eLo = 1.9259629911266175e-08f;

// The decay of a family: the one template parameter that tells the engine's kernels apart.
// cosine rides on the same axis: it is the one template parameter the engine's kernels take, and
// cosFormer's policy (a mask per token distance, features, a normaliser) replaces the decay's.
enum class DecayKind { head, token, key, value, cosine };

constexpr bool per_token(DecayKind d) { return d == DecayKind::token || d == DecayKind::key || d == DecayKind::value; }
// Log-decays per (segment, head) the segment scan needs: none, one, one per key or per value column.
inline int gate_width(DecayKind d, int key_dim, int value_dim) {
  if (d == DecayKind::head || d == DecayKind::cosine) return 0;
  return d == DecayKind::token ? 1 : d == DecayKind::key ? key_dim : value_dim;
}

struct HeadDecay {
  const float* pw;  // lambda^p, p = 0 .. C (shared memory)
  bool decayed;

  // Fills the table (visible after the kernel's next barrier).
  template <int C>
  __device__ static HeadDecay make(const RecurrenceParams& p, int h, float* table) {
    const double g = p.log_decay[h];
    for (int i = threadIdx.x; i <= C; i += blockDim.x) table[i] = static_cast<float>(exp(g * i));
    return {table, g != 0.0};
  }
  __device__ void prepare(const float* /*gates*/) {}
  __device__ bool active() const { return decayed; }
  __device__ float row(int i) const { return pw[i + 1]; }
  __device__ float key(int j, int c) const { return j < c ? pw[c - 1 - j] : 0.f; }
  __device__ float mask(int i, int j) const { return pw[i - j]; }
  __device__ float state(int c) const { return pw[c]; }
};

// G is kept in log2 units (one MUFU instruction per factor), summed in double and stored as a
// float pair hi + lo, so that G_i - G_j = (hi_i - hi_j) + (lo_i - lo_j) is as exact as the float it
// becomes however long the chunk's gates sum to, at full-rate float cost. The per-token factors
// exp(G_i) and exp(G_{C-1} - G_i) are formed once per chunk by the warp's scan (two per lane), so
// row(), key() and state() are loads; mask() forms its factor per score.
template <int C>
struct TokenDecay {
  static constexpr int kPerLane = C / 32;
  static_assert(C == 32 || C == 64, "one or two tokens per lane");
  // Per token of this warp's slice: G hi, G lo, exp(G_i), exp(G_{C-1} - G_i) (gates past c are
  // zero, so G_{C-1} = G_{c-1}).
  float4* slice;
  double chunk_log2 = 0;  // G_{C-1} of the chunk last prepared

  __device__ static TokenDecay make(float4* warp_slice) { return {warp_slice}; }
  // gates: the chunk's C log-gates (zero past its end) in shared memory. A warp-wide scan; the
  // warp's slice is ready for every lane when this returns.
  __device__ void prepare(const float* gates) {
    const int lane = threadIdx.x % 32;
    // Every lane is done reading the previous chunk's slice before any lane overwrites it (the
    // sm_90a consumers have no CTA barrier between chunks; racecheck flagged it there).
    __syncwarp();
    double x[kPerLane], sum = 0;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) sum += (x[e] = static_cast<double>(gates[lane * kPerLane + e]));
    double inclusive = sum;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const double y = __shfl_up_sync(0xFFFFFFFFu, inclusive, d);
      if (lane >= d) inclusive += y;
    }
    double run = __shfl_up_sync(0xFFFFFFFFu, inclusive, 1);
    if (lane == 0) run = 0;
    const double last = __shfl_sync(0xFFFFFFFFu, inclusive, 31) * kLog2e;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      run += x[e];
      const double g2 = run * kLog2e;
      const float hi = static_cast<float>(g2);
      slice[lane * kPerLane + e] = make_float4(hi, static_cast<float>(g2 - hi), exp2_ftz(static_cast<float>(g2)),
                                               exp2_ftz(static_cast<float>(last - g2)));
    }
    chunk_log2 = last;
    __syncwarp();
  }
  __device__ bool active() const { return true; }
  __device__ float row(int i) const { return slice[i].z; }
  __device__ float key(int j, int c) const { return j < c ? slice[j].w : 0.f; }
  __device__ float mask(int i, int j) const {
    const float4 a = slice[i], b = slice[j];
    return exp2_ftz((a.x - b.x) + (a.y - b.y));
  }
  __device__ float state(int /*c*/) const { return slice[C - 1].z; }
};

// The log-gate of token t of a row (its sequence starts at token `start`) into dst (shared memory):
// from the gate tensor, or the head's log-decay (p.gate_from_head), and 0 at the sequence's first
// token when p.gate_restart (params.cuh: the backward's reversed passes).
__device__ __forceinline__ void load_token_gate(float* dst, const RecurrenceParams& p, std::int64_t batch,
                                                std::int64_t start, std::int64_t t, int h) {
  if (p.gate_restart && t == start) *dst = 0.f;
  else if (p.gate_from_head) *dst = static_cast<float>(p.log_decay[h]);
  else cp_async_4(dst, p.log_gate + batch * p.sg.s0 + t * p.sg.s1 + h * p.sg.s2);
}

// The chunk's log-gates into a stage, with the chunk's q/k/v copies: C values (scalar gate) or C
// rows of K values at a pitch of kPitch floats (vector gate); zero past the chunk's end and past K.
template <int C, int kThreads>
__device__ __forceinline__ void load_token_gates(float* dst, const RecurrenceParams& p, std::int64_t batch,
                                                 std::int64_t start, std::int64_t t0, int count, int h) {
  for (int r = threadIdx.x; r < C; r += kThreads) {
    if (r < count) load_token_gate(dst + r, p, batch, start, t0 + r, h);
    else dst[r] = 0.f;
  }
}
// Columns [c0, c0 + W) of the chunk's rows of a per-key or per-value gate ([B, T, H, dim]) at a pitch
// of kPitch floats; zero past the chunk's end and past dim, and at the sequence's first token (it
// starts at `start`) when p.gate_restart.
template <int C, int W, int kPitch, int kThreads>
__device__ __forceinline__ void load_gate_rows(float* dst, const RecurrenceParams& p, std::int64_t batch,
                                               std::int64_t start, std::int64_t t0, int count, int h, int c0, int dim) {
  const float* head = p.log_gate + batch * p.sg.s0 + h * p.sg.s2;
  constexpr int kGroups = W / 4;
  for (int g = threadIdx.x; g < C * kGroups; g += kThreads) {
    const int r = g / kGroups, k0 = (g % kGroups) * 4, col = c0 + k0;
    float* d = dst + r * kPitch + k0;
    const float* src = head + (t0 + r) * p.sg.s1 + col * p.sg.s3;
    const bool row = r < count && !(p.gate_restart && t0 + r == start);
    if (row && p.gate_vectorized && col + 4 <= dim) {
      cp_async_16(d, src);
      continue;
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (row && col + e < dim) cp_async_4(d + e, src + e * p.sg.s3);
      else d[e] = 0.f;
    }
  }
}

}  // namespace lcsm::cuda::detail
