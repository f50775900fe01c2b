// The chunk's tensor-core products on mma.sync (sm_80+), shared by the forward kernel and the
// decay policies' own steps: the scores, the outputs from the state and from the scores, and the
// state update. Operands are bf16 hi (and lo) tiles in shared memory; products accumulate in fp32
// (split_mma: hi*hi + hi*lo + lo*hi where an operand carries a lo term). Device code.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/tiles_sm80.cuh"
#include "lcsm/cuda/primitives/mma_sm80.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"

namespace lcsm::cuda::detail {

template <bool kLo>
__device__ __forceinline__ void load_a(SplitA& a, const __nv_bfloat16* hi, const __nv_bfloat16* lo, int off) {
  ldmatrix_x4(a.hi, hi + off);
  if constexpr (kLo) ldmatrix_x4(a.lo, lo + off);
}
template <bool kLo>
__device__ __forceinline__ void load_b(SplitB& b, const __nv_bfloat16* hi, const __nv_bfloat16* lo, int off) {
  ldmatrix_x4(b.hi, hi + off);
  if constexpr (kLo) ldmatrix_x4(b.lo, lo + off);
}
template <bool kLo>
__device__ __forceinline__ void load_b_trans(SplitB& b, const __nv_bfloat16* hi, const __nv_bfloat16* lo, int off) {
  ldmatrix_x4_trans(b.hi, hi + off);
  if constexpr (kLo) ldmatrix_x4_trans(b.lo, lo + off);
}

// Scores of rows [r0, r0 + 16) x this warp's columns, decay mask, P (hi, lo) to smem. The operands
// are q, k (lightning, scalar gate) or the vector gate's Q~, K^; kSplit: they carry a lo term.
// row_sums (cosFormer's normaliser): this warp's share of every row's sum of P as stored, at
// row_sums[row].
template <class Tr, bool kSplit, class Decay>
__device__ __forceinline__ void scores_sm80(const __nv_bfloat16* qh, const __nv_bfloat16* ql, const __nv_bfloat16* kh,
                                            const __nv_bfloat16* kl, __nv_bfloat16* sPh, __nv_bfloat16* sPl,
                                            const Decay& decay, int r0, int cw, int lane, float* row_sums = nullptr) {
  float sums[2] = {0.f, 0.f};  // rows r0 + lane / 4 and + 8
  float A[Tr::kScoreTiles][4] = {};
  const int n0 = cw * Tr::kScoreTiles * 8;
#pragma unroll
  for (int kk = 0; kk < Tr::kFeatureTile / 16; ++kk) {
    SplitA q;
    load_a<kSplit>(q, qh, ql, (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
#pragma unroll
    for (int np = 0; np < Tr::kScoreTiles / 2; ++np) {
      SplitB k;
      load_b<kSplit>(k, kh, kl, (n0 + np * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKP + kk * 16 + ((lane / 8) % 2) * 8);
      split_mma<kSplit, kSplit>(A[2 * np], A[2 * np + 1], q, k);
    }
  }
#pragma unroll
  for (int j = 0; j < Tr::kScoreTiles; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = r0 + lane / 4 + half * 8, col = n0 + j * 8 + 2 * (lane % 4);
      float x0 = A[j][2 * half], x1 = A[j][2 * half + 1];
      x0 = col <= row ? (decay.active() ? x0 * decay.mask(row, col) : x0) : 0.f;
      x1 = col + 1 <= row ? (decay.active() ? x1 * decay.mask(row, col + 1) : x1) : 0.f;
      std::uint32_t h32, l32;
      split_pack_bf16(x0, x1, h32, l32);
      *reinterpret_cast<std::uint32_t*>(sPh + row * Tr::kPP + col) = h32;
      if constexpr (Tr::kSplitP) *reinterpret_cast<std::uint32_t*>(sPl + row * Tr::kPP + col) = l32;
      if constexpr (Tr::kCosine) {
        float2 x = unpack_bf16(h32);
        if constexpr (Tr::kSplitP) {
          const float2 y = unpack_bf16(l32);
          x.x += y.x, x.y += y.y;
        }
        sums[half] += x.x + x.y;
      }
    }
  if constexpr (Tr::kCosine) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      sums[half] += __shfl_xor_sync(0xFFFFFFFFu, sums[half], 1);
      sums[half] += __shfl_xor_sync(0xFFFFFFFFu, sums[half], 2);
    }
    if (row_sums && lane % 4 == 0) row_sums[r0 + lane / 4] = sums[0], row_sums[r0 + lane / 4 + 8] = sums[1];
  }
}

// O += Q S for rows [r0, r0 + 16) x this warp's output columns, over the first kRows rows of S (the
// state's; cosFormer: one half of it, from sSh). Q is q (lightning, the scalar and value gates),
// the vector gate's q e^L, or cosFormer's phi(q).
template <class Tr, bool kQLo, int kRows = Tr::kKeyTile>
__device__ __forceinline__ void output_state_sm80(float (&O)[Tr::kOutTiles][4], const __nv_bfloat16* qh,
                                                  const __nv_bfloat16* ql, const __nv_bfloat16* sSh,
                                                  const __nv_bfloat16* sSl, int r0, int v0, int lane) {
#pragma unroll
  for (int kk = 0; kk < kRows / 16; ++kk) {
    SplitA q;
    load_a<kQLo>(q, qh, ql, (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
#pragma unroll
    for (int np = 0; np < Tr::kOutTiles / 2; ++np) {
      SplitB s;
      load_b_trans<Tr::kExactState>(
          s, sSh, sSl, (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + v0 + np * 16 + (lane / 16) * 8);
      split_mma<kQLo, Tr::kExactState>(O[2 * np], O[2 * np + 1], q, s);
    }
  }
}

// O += P V for rows [r0, r0 + 16) x this warp's output columns; V is v or the value gate's V^ (kVLo:
// with a lo term).
template <class Tr, bool kVLo>
__device__ __forceinline__ void output_scores_sm80(float (&O)[Tr::kOutTiles][4], const __nv_bfloat16* sPh,
                                                   const __nv_bfloat16* sPl, const __nv_bfloat16* vh,
                                                   const __nv_bfloat16* vl, int r0, int v0, int lane) {
#pragma unroll
  for (int kk = 0; kk < Tr::kChunk / 16; ++kk) {
    SplitA pa;
    load_a<Tr::kSplitP>(pa, sPh, sPl, (r0 + lane % 16) * Tr::kPP + kk * 16 + (lane / 16) * 8);
#pragma unroll
    for (int np = 0; np < Tr::kOutTiles / 2; ++np) {
      SplitB v;
      load_b_trans<kVLo>(v, vh, vl,
                         (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + v0 + np * 16 + (lane / 16) * 8);
      split_mma<Tr::kSplitP, kVLo>(O[2 * np], O[2 * np + 1], pa, v);
    }
  }
}

// O = Q S (rows scaled by row_factor) + P V for rows [r0, r0 + 16) x this warp's output columns.
template <class Tr, bool kQLo, class RowFactor>
__device__ __forceinline__ void output_sm80(float (&O)[Tr::kOutTiles][4], const __nv_bfloat16* qh,
                                            const __nv_bfloat16* ql, const StageTiles<Tr>& st, const __nv_bfloat16* sPh,
                                            const __nv_bfloat16* sPl, const __nv_bfloat16* sSh,
                                            const __nv_bfloat16* sSl, bool state_zero, RowFactor&& row_factor, int r0,
                                            int v0, int lane) {
  if (!state_zero) {
    output_state_sm80<Tr, kQLo>(O, qh, ql, sSh, sSl, r0, v0, lane);
    row_factor(O, r0 + lane / 4);
  }
  output_scores_sm80<Tr, Tr::kSplitInputs>(O, sPh, sPl, st.vh, st.vl, r0, v0, lane);
}

// S = decay S + W^T V with W the decayed keys: lightning and the scalar gate scale k's fragments in
// registers by key_factor(j) (split into hi + lo when exact); cosFormer by key_factor(j, sin_half)
// (its cos or sin, the state's two halves reading the same k columns); the vector gate reads its K~
// tiles. V: v, or the value gate's V~ (kVLo: with a lo term); kKLo: k's lo tile is read.
template <class Tr, bool kVLo, bool kKLo = Tr::kStageLoQK, class KeyFactor>
__device__ __forceinline__ void state_update_sm80(StateRegs<Tr>& S, const StageTiles<Tr>& st,
                                                  const __nv_bfloat16* wh_tile, const __nv_bfloat16* wl_tile,
                                                  const __nv_bfloat16* vh_tile, const __nv_bfloat16* vl_tile,
                                                  KeyFactor&& key_factor, int warp, int lane) {
  constexpr bool kSplit = kKLo;
  constexpr bool kWLo = Tr::kExactState || kSplit;  // W carries a lo term (the vector gate's K~: kLoQK)
  const int srow0 = (warp % Tr::kStateRowWarps) * Tr::kStateMTiles * 16;
  const int scol0 = (warp / Tr::kStateRowWarps) * Tr::kStateNTiles * 8;
#pragma unroll
  for (int kk = 0; kk < Tr::kChunk / 16; ++kk) {
    // Tokens of this lane's fragment elements: a0/a1 hold j0, j0 + 1; a2/a3 hold j0 + 8, j0 + 9.
    const int j0 = kk * 16 + 2 * (lane % 4);
    float w[4];
    if constexpr (!Tr::kKeyGate && !Tr::kCosine)
      w[0] = key_factor(j0), w[1] = key_factor(j0 + 1), w[2] = key_factor(j0 + 8), w[3] = key_factor(j0 + 9);
#pragma unroll
    for (int m = 0; m < Tr::kStateMTiles; ++m) {
      SplitA W;
      int kcol = srow0 + m * 16;  // the k column of the state rows of this m-tile
      if constexpr (Tr::kCosine) {
        const bool sin_half = kcol >= Tr::kFeatureTile;
        if (sin_half) kcol -= Tr::kFeatureTile;
        w[0] = key_factor(j0, sin_half), w[1] = key_factor(j0 + 1, sin_half);
        w[2] = key_factor(j0 + 8, sin_half), w[3] = key_factor(j0 + 9, sin_half);
      }
      const int off = (kk * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKP + kcol + ((lane / 8) % 2) * 8;
      if constexpr (Tr::kKeyGate) {
        ldmatrix_x4_trans(W.hi, wh_tile + off);
        if constexpr (kWLo) ldmatrix_x4_trans(W.lo, wl_tile + off);
      } else {
        std::uint32_t kh[4], kl[4];
        ldmatrix_x4_trans(kh, st.kh + off);
        if constexpr (kSplit) ldmatrix_x4_trans(kl, st.kl + off);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          float2 x = unpack_bf16(kh[r]);
          if constexpr (kSplit) {
            const float2 y = unpack_bf16(kl[r]);
            x.x += y.x, x.y += y.y;
          }
          split_pack_bf16(w[r < 2 ? 0 : 2] * x.x, w[r < 2 ? 1 : 3] * x.y, W.hi[r], W.lo[r]);
        }
      }
#pragma unroll
      for (int np = 0; np < Tr::kStateNTiles / 2; ++np) {
        SplitB v;
        load_b_trans<kVLo>(v, vh_tile, vl_tile,
                           (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + scol0 + np * 16 + (lane / 16) * 8);
        split_mma<kWLo, kVLo>(S[m][2 * np], S[m][2 * np + 1], W, v);
      }
    }
  }
}

}  // namespace lcsm::cuda::detail
