// The value gate's chunk factors on the mma.sync kernel: a gate along the state's value columns,
//   S_t = S_{t-1} diag(e^{g_t}) + k_t v_t^T,   o_t = scale S_t^T q_t,
// which no family's forward has but the vector gate's backward needs twice (dq and dk decay along
// their own key axis: chunked/backward.cuh). A chunk is C = 32 tokens; with L_i the cumulative
// log-gate of token i inside the chunk (per value column) and T = L_{C-1}:
//   O_i = e^{L_i} (.) (q_i S) + sum_{j <= i} A_ij (v_j (.) e^{L_i - L_j}),   A = mask(Q K^T)
//   S   = S diag(e^T) + K^T (V (.) e^{T - L})
// The decayed values V~ = V (.) e^{T - L} are formed once per chunk (exponents <= 0) and feed the
// state update's MMA in place of v. The scores A need no factor; the factor of a pair moves to the
// values and the output rows:
//   gentle chunk (|L| <= kSeparableRange for every token and column, as the vector gate's):
//     O = e^{L} (.) (Q S + A V^),  V^ = V (.) e^{-L}  (factors in [1, 2^64]: nothing overflows);
//   steep chunk: rows i < 16: O_i = e^{L_i} (.) q_i S + diagonal block; rows i >= 16, with M = L_15:
//     O_i = e^{L_i - M} (.) (e^{M} (.) q_i S + sum_{j < 16} A_ij v_j (.) e^{M - L_j}) + diagonal block,
//   the off-diagonal block one MMA over V^ = V (.) e^{M - L} (rows >= 16 zero), and the two
//   diagonal 16 x 16 blocks elementwise with only exponentials of non-positive numbers.
// L comes from key_gate_cumulate (the compensated float pair hi + lo, key_gate_sm80.cuh). Device code.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/chunk_mma_sm80.cuh"
#include "lcsm/cuda/chunked/key_gate_sm80.cuh"
#include "lcsm/cuda/chunked/tiles_sm80.cuh"

namespace lcsm::cuda::detail {

// Shared-memory operands of the value gate's chunk (see Sm80Traits::kOffDecayed).
template <class Tr>
struct ValueGateTiles {
  __nv_bfloat16 *th, *tl;  // V~ = V e^{T - L}
  __nv_bfloat16 *uh, *ul;  // V^ = V e^{-L} (gentle) or V e^{M - L} on rows < 16 (steep)
  __nv_bfloat16* gate_lo;  // L's lo parts, rows of Tr::kVP
  float* state_factor;     // e^{T}, per value column
  __device__ ValueGateTiles(__nv_bfloat16* smem, unsigned char* smem_raw) {
    th = smem + Tr::kOffDecayed, tl = th + Tr::kV, uh = tl + Tr::kV, ul = uh + Tr::kV;
    gate_lo = smem + Tr::kOffGateLo;
    state_factor = reinterpret_cast<float*>(smem_raw + Tr::kOffDecay);
  }
};

// e^{L_{row, col} - L_{ref, col}} (ref < 0: e^{L_{row, col}}), from the stage's L (hi) and the lo parts.
template <class Tr>
__device__ __forceinline__ float value_gate_factor(const float* L, const __nv_bfloat16* lo, int row, int ref, int col) {
  float hi = L[row * Tr::kGP + col], l = __bfloat162float(lo[row * Tr::kVP + col]);
  if (ref >= 0) hi -= L[ref * Tr::kGP + col], l -= __bfloat162float(lo[ref * Tr::kVP + col]);
  return exp2_pair(hi, l);
}

// After key_gate_cumulate and a barrier: V~ and (unless kDeltaOnly) V^, each thread 8 columns of a row.
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void value_gate_operands(const StageTiles<Tr>& st, const ValueGateTiles<Tr>& vg,
                                                    bool steep) {
  constexpr int C = Tr::kChunk, VT = Tr::kValueBlock, kGroups = VT / 8;
  constexpr bool kSplit = Tr::kSplitInputs;
  const float* L = st.gates;
  for (int g = threadIdx.x; g < C * kGroups; g += Tr::kThreads) {
    const int r = g / kGroups, c0 = (g % kGroups) * 8, off = r * Tr::kVP + c0;
    float l[8], t[8], ll[8], tl[8], v[8], x[8];
    load_floats8(l, L + r * Tr::kGP + c0);
    load_floats8(t, L + (C - 1) * Tr::kGP + c0);  // gates past the chunk's end are zero
    load_bf16x8(ll, vg.gate_lo + off);
    load_bf16x8(tl, vg.gate_lo + (C - 1) * Tr::kVP + c0);
    load8<kSplit>(v, st.vh + off, st.vl + off);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = v[e] * exp2_pair(t[e] - l[e], tl[e] - ll[e]);
    store8<Tr::kLoV>(x, vg.th + off, vg.tl + off);
    if constexpr (!kDeltaOnly) {
      if (!steep) {
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = v[e] * exp2_pair(-l[e], -ll[e]);
      } else if (r < 16) {
        float m[8], ml[8];
        load_floats8(m, L + 15 * Tr::kGP + c0);
        load_bf16x8(ml, vg.gate_lo + 15 * Tr::kVP + c0);
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = v[e] * exp2_pair(m[e] - l[e], ml[e] - ll[e]);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = 0.f;
      }
      store8<Tr::kLoV>(x, vg.uh + off, vg.ul + off);
    }
  }
}

// Multiplies each output fragment element (row, column local to the CTA) by factor(row, col).
template <class Tr, class Factor>
__device__ __forceinline__ void scale_outputs(float (&O)[Tr::kOutTiles][4], int r0, int v0, int lane, Factor&& factor) {
#pragma unroll
  for (int j = 0; j < Tr::kOutTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = r0 + lane / 4 + (e >= 2 ? 8 : 0), col = v0 + j * 8 + 2 * (lane % 4) + (e & 1);
      O[j][e] *= factor(row, col);
    }
}

// A steep chunk's diagonal blocks: O_ic += sum over j <= i of i's 16-token block of
// A_ij v_jc e^{L_ic - L_jc}, A from the score tile (hi + lo), v from the stage (hi + lo for split inputs).
template <class Tr>
__device__ __forceinline__ void value_gate_diagonal(float (&O)[Tr::kOutTiles][4], const StageTiles<Tr>& st,
                                                    const ValueGateTiles<Tr>& vg, const __nv_bfloat16* sPh,
                                                    const __nv_bfloat16* sPl, int r0, int v0, int lane) {
  const float* L = st.gates;
  const int b = r0;  // a warp's 16 rows are one block
#pragma unroll
  for (int j = 0; j < Tr::kOutTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = r0 + lane / 4 + (e >= 2 ? 8 : 0), col = v0 + j * 8 + 2 * (lane % 4) + (e & 1);
      const float li = L[row * Tr::kGP + col], lli = __bfloat162float(vg.gate_lo[row * Tr::kVP + col]);
      float acc = 0.f;
      for (int s = b; s <= row; ++s) {
        float a = __bfloat162float(sPh[row * Tr::kPP + s]);
        if constexpr (Tr::kSplitP) a += __bfloat162float(sPl[row * Tr::kPP + s]);
        float v = __bfloat162float(st.vh[s * Tr::kVP + col]);
        if constexpr (Tr::kSplitInputs) v += __bfloat162float(st.vl[s * Tr::kVP + col]);
        acc += a * v * exp2_pair(li - L[s * Tr::kGP + col], lli - __bfloat162float(vg.gate_lo[s * Tr::kVP + col]));
      }
      O[j][e] += acc;
    }
}

// The outputs of rows [r0, r0 + 16) x this warp's columns (row block rw). Gentle: e^{L} (Q S + A V^).
// Steep: rows < 16 e^{L} Q S, rows >= 16 e^{L - M} (e^{M} Q S + A V^) with M = L_15; then the
// diagonal blocks.
template <class Tr>
__device__ __forceinline__ void value_gate_outputs_sm80(float (&O)[Tr::kOutTiles][4], const StageTiles<Tr>& st,
                                                        const ValueGateTiles<Tr>& vg, const __nv_bfloat16* sPh,
                                                        const __nv_bfloat16* sPl, const __nv_bfloat16* sSh,
                                                        const __nv_bfloat16* sSl, bool state_zero, bool steep, int rw,
                                                        int r0, int v0, int lane) {
  const float* L = st.gates;
  if (!state_zero) {
    output_state_sm80<Tr, Tr::kSplitInputs>(O, st.qh, st.ql, sSh, sSl, r0, v0, lane);
    if (steep)
      scale_outputs<Tr>(O, r0, v0, lane, [&](int row, int col) {
        return value_gate_factor<Tr>(L, vg.gate_lo, row < 16 ? row : 15, -1, col);
      });
  }
  if (!steep || rw == 1) output_scores_sm80<Tr, Tr::kLoV>(O, sPh, sPl, vg.uh, vg.ul, r0, v0, lane);
  if (!steep) {
    scale_outputs<Tr>(O, r0, v0, lane,
                      [&](int row, int col) { return value_gate_factor<Tr>(L, vg.gate_lo, row, -1, col); });
  } else {
    if (rw == 1)
      scale_outputs<Tr>(O, r0, v0, lane,
                        [&](int row, int col) { return value_gate_factor<Tr>(L, vg.gate_lo, row, 15, col); });
    value_gate_diagonal<Tr>(O, st, vg, sPh, sPl, r0, v0, lane);
  }
}

}  // namespace lcsm::cuda::detail
