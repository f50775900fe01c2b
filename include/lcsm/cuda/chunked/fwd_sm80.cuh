// The chunked forward on warp-level tensor cores (mma.sync, sm_80+): every element type, K <= 256,
// every decay kind. One CTA per (segment of a sequence, head, block of value columns).
//
// Per chunk of C tokens (S: the K x VT state block at the chunk start; factors from the decay
// policy, chunked/decay.cuh, or for the vector gate from chunked/key_gate_sm80.cuh):
//   P = (Q K^T) (.) D, D_ij = exp(G_i - G_j) for i >= j else 0 (a select)
//   O = scale * (diag(exp(G_i)) Q S + P V)
//   S = exp(G_{c-1}) S + (diag(exp(G_{c-1} - G_j)) K)^T V
// All products run as bf16 m16n8k16 MMAs with fp32 accumulation (split_mma): operands that are not
// exact in bf16 carry a lo bf16 term (products hi*hi + hi*lo + lo*hi), about 16 mantissa bits: the
// state, the decayed keys and the scores in exact mode, and q, k, v for fp16/fp32 inputs. The state
// never leaves the CTA's registers between chunks; it goes through shared memory (as hi/lo bf16)
// only to serve as the next chunk's MMA operand.
//
// kDeltaOnly: the segment's state contribution from zero (and its total log-decay), for the
// segment scan (chunked/scan.cuh); the output launch then runs every segment from its start state.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/key_gate_sm80.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/tiles_sm80.cuh"
#include "lcsm/cuda/chunked/value_gate_sm80.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/mma_sm80.cuh"

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

// The decay policy object of a kernel (the column gates have none: key_gate_sm80.cuh and
// value_gate_sm80.cuh; their scores are masked only).
struct NoChunkDecay {
  __device__ bool active() const { return false; }
  __device__ float mask(int, int) const { return 1.f; }
};
template <class Tr>
__device__ __forceinline__ auto chunk_decay(const RecurrenceParams& p, int h, unsigned char* smem_raw) {
  if constexpr (Tr::kColumnGate) {
    return NoChunkDecay{};
  } else if constexpr (Tr::kTokenGate) {
    return TokenDecay<Tr::kChunk>::make(reinterpret_cast<float4*>(smem_raw + Tr::kOffDecay) +
                                        (threadIdx.x / 32) * Tr::kChunk);
  } else {
    return HeadDecay::make<Tr::kChunk>(p, h, reinterpret_cast<float*>(smem_raw + Tr::kOffDecay));
  }
}

// Scores of rows [r0, r0 + 16) x this warp's columns, decay mask, P (hi, lo) to smem. The operands
// are q, k (lightning, scalar gate) or the vector gate's Q~, K^; kSplit: they carry a lo term.
template <class Tr, bool kSplit, class Decay>
__device__ __forceinline__ void scores_sm80(const __nv_bfloat16* qh, const __nv_bfloat16* ql, const __nv_bfloat16* kh,
                                            const __nv_bfloat16* kl, __nv_bfloat16* sPh, __nv_bfloat16* sPl,
                                            const Decay& decay, int r0, int cw, int lane) {
  float A[Tr::kScoreTiles][4] = {};
  const int n0 = cw * Tr::kScoreTiles * 8;
#pragma unroll
  for (int kk = 0; kk < Tr::kKeyTile / 16; ++kk) {
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
    }
}

// O += Q S for rows [r0, r0 + 16) x this warp's output columns. Q is q (lightning, the scalar and
// value gates) or the vector gate's q e^L.
template <class Tr, bool kQLo>
__device__ __forceinline__ void output_state_sm80(float (&O)[Tr::kOutTiles][4], const __nv_bfloat16* qh,
                                                  const __nv_bfloat16* ql, const __nv_bfloat16* sSh,
                                                  const __nv_bfloat16* sSl, int r0, int v0, int lane) {
#pragma unroll
  for (int kk = 0; kk < Tr::kKeyTile / 16; ++kk) {
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
// registers by key_factor(j) (split into hi + lo when exact); the vector gate reads its K~ tiles.
// V: v, or the value gate's V~ (kVLo: with a lo term).
template <class Tr, bool kVLo, class KeyFactor>
__device__ __forceinline__ void state_update_sm80(StateRegs<Tr>& S, const StageTiles<Tr>& st,
                                                  const __nv_bfloat16* wh_tile, const __nv_bfloat16* wl_tile,
                                                  const __nv_bfloat16* vh_tile, const __nv_bfloat16* vl_tile,
                                                  KeyFactor&& key_factor, int warp, int lane) {
  constexpr bool kSplit = Tr::kSplitInputs;
  constexpr bool kWLo = Tr::kExactState || kSplit;  // W carries a lo term (the vector gate's K~: kLoQK)
  const int srow0 = (warp % Tr::kStateRowWarps) * Tr::kStateMTiles * 16;
  const int scol0 = (warp / Tr::kStateRowWarps) * Tr::kStateNTiles * 8;
#pragma unroll
  for (int kk = 0; kk < Tr::kChunk / 16; ++kk) {
    // Tokens of this lane's fragment elements: a0/a1 hold j0, j0 + 1; a2/a3 hold j0 + 8, j0 + 9.
    const int j0 = kk * 16 + 2 * (lane % 4);
    float w[4];
    if constexpr (!Tr::kKeyGate)
      w[0] = key_factor(j0), w[1] = key_factor(j0 + 1), w[2] = key_factor(j0 + 8), w[3] = key_factor(j0 + 9);
#pragma unroll
    for (int m = 0; m < Tr::kStateMTiles; ++m) {
      SplitA W;
      const int off = (kk * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKP + srow0 + m * 16 + ((lane / 8) % 2) * 8;
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

template <class T, class Tr, bool kDeltaOnly>
__global__ void __launch_bounds__(Tr::kThreads, 1) chunk_kernel_sm80(const __grid_constant__ RecurrenceParams p) {
  constexpr int C = Tr::kChunk, VT = Tr::kValueBlock;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sPh = smem + Tr::kOffP;
  __nv_bfloat16* sPl = sPh + Tr::kP;  // only when P keeps a lo term
  __nv_bfloat16* sSh = smem + Tr::kOffSh;
  __nv_bfloat16* sSl = smem + Tr::kOffSl;  // only when exact
  const KeyGateTiles<Tr> kg(smem, smem_raw);
  const ValueGateTiles<Tr> vg(smem, smem_raw);

  const BlockCoords bc = block_coords(p);
  Item it;
  if (!decode_item(p, bc.item, it)) return;
  const bool last_segment = it.segment + 1 >= it.segments;
  if (kDeltaOnly && last_segment && !p.last_delta) return;  // its contribution is needed by sequence parallelism only

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, h = bc.head;
  const int K = p.key_dim, V = p.value_dim, c0 = bc.value_block * VT;
  auto decay = chunk_decay<Tr>(p, h, smem_raw);
  double segment_log2[kKeysPerThread<Tr>] = {};  // the segment's total log2-decay (gates)

  StateRegs<Tr> S;
  bool state_zero = true;
  const Strides4 ws{static_cast<std::int64_t>(p.heads) * K * V, static_cast<std::int64_t>(K) * V, V, 1};
  if (!kDeltaOnly && p.segment_states) {  // cut sequences: every segment starts from the scanned state
    state_from_global<Tr>(S, p.segment_states, ws, bc.item, h, c0, K, V);
    state_zero = false;
  } else if (!kDeltaOnly && p.initial_state) {
    state_from_global<Tr>(S, p.initial_state, p.s_initial, it.seq, h, c0, K, V);
    state_zero = false;
  } else {
    state_from_global<Tr>(S, nullptr, p.s_initial, 0, 0, c0, K, V);
  }
  if (!kDeltaOnly && !state_zero) state_to_smem<Tr>(S, sSh, sSl);

  T* o = static_cast<T*>(p.o);
  const int rw = warp % Tr::kRowWarps, cw = warp / Tr::kRowWarps;  // score/output partition
  const int r0 = rw * 16, v0 = cw * Tr::kOutTiles * 8;
  int stage = 0;
  if (it.begin < it.end) {
    const std::int64_t c = it.end - it.begin < C ? it.end - it.begin : C;
    load_chunk<T, Tr, kDeltaOnly>(smem + Tr::kOffStages, p, it, it.start + it.begin, static_cast<int>(c), h, c0);
  }

  for (std::int64_t t = it.begin; t < it.end; t += C) {
    const int c = static_cast<int>(it.end - t < C ? it.end - t : C);
    const std::int64_t tg = it.start + t;  // first token of the chunk in the batch row
    const StageTiles<Tr> st(smem + Tr::kOffStages + stage * Tr::kStage);
    // This chunk's loads are the oldest in flight; with two stages, start the next chunk's now.
    if constexpr (Tr::kStages == 2) {
      if (t + C < it.end) {
        const std::int64_t cn = it.end - t - C < C ? it.end - t - C : C;
        load_chunk<T, Tr, kDeltaOnly>(smem + Tr::kOffStages + (stage ^ 1) * Tr::kStage, p, it, tg + C,
                                      static_cast<int>(cn), h, c0);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // chunk data (and the state operand) visible to all

    bool steep = false;  // the value gate's chunk takes the steep form (value_gate_sm80.cuh)
    if constexpr (Tr::kValueGate) {
      const bool gentle = key_gate_cumulate<Tr>(st.gates, vg.gate_lo, vg.state_factor, segment_log2);
      steep = __syncthreads_or(!gentle) != 0;  // L and e^T
      value_gate_operands<Tr, kDeltaOnly>(st, vg, steep);
      if (!kDeltaOnly && cw < Tr::kScoreColWarps)
        scores_sm80<Tr, Tr::kSplitInputs>(st.qh, st.ql, st.kh, st.kl, sPh, sPl, decay, r0, cw, lane);
      __syncthreads();  // V~, V^ and A
    } else if constexpr (Tr::kKeyGate) {
      const bool gentle = key_gate_cumulate<Tr>(st.gates, kg.gate_lo, kg.state_factor, segment_log2);
      const bool steep = __syncthreads_or(!gentle) != 0;  // L and e^T
      const bool separable = Tr::kSeparableScores && !kDeltaOnly && !steep;
      key_gate_operands<Tr, kDeltaOnly>(st, kg, sPh, sPl, separable);
      __syncthreads();  // Q~, K~ (and K^, or P)
      // The score MMAs: all of P (separable), or a steep chunk's off-diagonal blocks (C = 32).
      const bool score_mma = separable || (Tr::kSeparableScores && !kDeltaOnly && rw != cw);
      if (score_mma && cw < Tr::kScoreColWarps) {
        scores_sm80<Tr, true>(separable ? kg.qh : kg.uh, separable ? kg.ql : kg.ul, kg.uh, kg.ul, sPh, sPl, decay, r0,
                              cw, lane);
      }
      // S = diag(e^T) S + K~^T V, in registers while the score warps form P (the outputs read the
      // state operand, S's copy in shared memory, which is replaced only after the last barrier).
#pragma unroll
      for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          int row, col;
          state_coords<Tr>(warp, lane, m, 0, e, row, col);
          const float f = kg.state_factor[row];
#pragma unroll
          for (int j = 0; j < Tr::kStateNTiles; ++j) S[m][j][e] *= f;
        }
      state_update_sm80<Tr, Tr::kSplitInputs>(
          S, st, kg.kh, kg.kl, st.vh, st.vl, [](int) { return 1.f; }, warp, lane);
      if (Tr::kSeparableScores && !kDeltaOnly) __syncthreads();  // P complete
    } else {
      if constexpr (Tr::kTokenGate) {
        decay.prepare(st.gates);
        segment_log2[0] += decay.chunk_log2;
      }
      if (!kDeltaOnly && cw < Tr::kScoreColWarps)
        scores_sm80<Tr, Tr::kSplitInputs>(st.qh, st.ql, st.kh, st.kl, sPh, sPl, decay, r0, cw, lane);
      __syncthreads();  // P complete
    }

    if (!kDeltaOnly) {
      float O[Tr::kOutTiles][4] = {};
      if constexpr (Tr::kValueGate) {
        // Gentle: e^{L} (Q S + A V^). Steep: rows < 16 e^{L} Q S, rows >= 16 e^{L - M} (e^{M} Q S +
        // A V^) with M = L_15; then the diagonal blocks.
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
      } else if constexpr (Tr::kKeyGate) {
        output_sm80<Tr, Tr::kLoQK>(
            O, kg.qh, kg.ql, st, sPh, sPl, sSh, sSl, state_zero, [](auto&, int) {}, r0, v0, lane);
      } else {
        auto rows = [&](float(&acc)[Tr::kOutTiles][4], int row) {
          if (!decay.active()) return;
          const float top = decay.row(row), bottom = decay.row(row + 8);
#pragma unroll
          for (int j = 0; j < Tr::kOutTiles; ++j)
            acc[j][0] *= top, acc[j][1] *= top, acc[j][2] *= bottom, acc[j][3] *= bottom;
        };
        output_sm80<Tr, Tr::kSplitInputs>(O, st.qh, st.ql, st, sPh, sPl, sSh, sSl, state_zero, rows, r0, v0, lane);
      }
#pragma unroll
      for (int j = 0; j < Tr::kOutTiles; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = r0 + lane / 4 + half * 8, lcol = v0 + j * 8 + 2 * (lane % 4), col = c0 + lcol;
          const float x0 = p.scale * O[j][2 * half], x1 = p.scale * O[j][2 * half + 1];
          if constexpr (Tr::kStageOutput) {
            if (!p.out_float) {  // written out after the update's barrier
              T* so = reinterpret_cast<T*>(smem + Tr::kOffO) + row * Tr::kVP + lcol;
              so[0] = from_float<T>(x0);
              so[1] = from_float<T>(x1);
            } else if (row < c && col < V) {  // fp32 outputs of 16-bit inputs (the backward's dq, dk)
              float* dst = static_cast<float*>(p.o) + it.batch * p.so.s0 + (tg + row) * p.so.s1 +
                           static_cast<std::int64_t>(h) * p.so.s2 + col * p.so.s3;
              dst[0] = x0;
              if (col + 1 < V) dst[p.so.s3] = x1;
            }
          } else {
            if (row >= c || col >= V) continue;
            T* dst =
                o + it.batch * p.so.s0 + (tg + row) * p.so.s1 + static_cast<std::int64_t>(h) * p.so.s2 + col * p.so.s3;
            if (col + 1 < V && p.vectorized) {
              *reinterpret_cast<float2*>(dst) = make_float2(x0, x1);
            } else {
              dst[0] = from_float<T>(x0);
              if (col + 1 < V) dst[p.so.s3] = from_float<T>(x1);
            }
          }
        }
    }

    // ---- S = exp(G_{c-1}) S + W^T V (the vector gate's is above). ----
    if constexpr (Tr::kValueGate) {  // S = S diag(e^T) + K^T V~
#pragma unroll
      for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
        for (int j = 0; j < Tr::kStateNTiles; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            int row, col;
            state_coords<Tr>(warp, lane, m, j, e, row, col);
            S[m][j][e] *= vg.state_factor[col];
          }
      state_update_sm80<Tr, Tr::kLoV>(
          S, st, nullptr, nullptr, vg.th, vg.tl, [](int) { return 1.f; }, warp, lane);
    } else if constexpr (!Tr::kKeyGate) {
      if (decay.active()) {
        const float f = decay.state(c);
#pragma unroll
        for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
          for (int j = 0; j < Tr::kStateNTiles; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) S[m][j][e] *= f;
      }
      state_update_sm80<Tr, Tr::kSplitInputs>(
          S, st, nullptr, nullptr, st.vh, st.vl, [&](int j) { return decay.key(j, c); }, warp, lane);
    }
    __syncthreads();  // every warp is done reading this chunk's state operand and stage
    if constexpr (Tr::kStageOutput) {
      if (!kDeltaOnly && !p.out_float) {  // the staged outputs of this chunk, as 16-byte row segments
        const T* so = reinterpret_cast<const T*>(smem + Tr::kOffO);
        T* head = o + it.batch * p.so.s0 + static_cast<std::int64_t>(h) * p.so.s2;
        constexpr int kGroups = VT / 8;
        for (int g = threadIdx.x; g < C * kGroups; g += Tr::kThreads) {
          const int row = g / kGroups, lc = (g % kGroups) * 8, col = c0 + lc;
          if (row >= c || col >= V) continue;
          T* dst = head + (tg + row) * p.so.s1 + col * p.so.s3;
          if (p.vectorized && col + 8 <= V) {
            *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(so + row * Tr::kVP + lc);
          } else {
            for (int k = 0; k < 8 && col + k < V; ++k) dst[k * p.so.s3] = so[row * Tr::kVP + lc + k];
          }
        }
      }
    }
    state_zero = false;
    if (!kDeltaOnly && t + C < it.end) state_to_smem<Tr>(S, sSh, sSl);  // read after the next sync
    if constexpr (Tr::kStages == 2) {
      stage ^= 1;
    } else if (t + C < it.end) {
      const std::int64_t cn = it.end - t - C < C ? it.end - t - C : C;
      load_chunk<T, Tr, kDeltaOnly>(smem + Tr::kOffStages, p, it, tg + C, static_cast<int>(cn), h, c0);
    }
  }

  if (kDeltaOnly) {  // delta of segment s: the next slot, or last_delta for a sequence's last segment
    if (last_segment) state_to_global<Tr>(S, p.last_delta, ws, it.seq, h, c0, K, V);
    else state_to_global<Tr>(S, p.segment_states, ws, bc.item + 1, h, c0, K, V);
    if constexpr (Tr::kTokenGate) {
      if (bc.value_block == 0 && threadIdx.x == 0)
        p.segment_log_decay[bc.item * p.heads + h] = static_cast<float>(segment_log2[0]);
    }
    if constexpr (Tr::kKeyGate) {
      if (bc.value_block == 0)
#pragma unroll
        for (int u = 0; u < kKeysPerThread<Tr>; ++u) {
          const int k = static_cast<int>(threadIdx.x) + u * Tr::kThreads;
          if (k < K) p.segment_log_decay[(bc.item * p.heads + h) * K + k] = static_cast<float>(segment_log2[u]);
        }
    }
    if constexpr (Tr::kValueGate) {  // every value block has its own columns
#pragma unroll
      for (int u = 0; u < kKeysPerThread<Tr>; ++u) {
        const int col = c0 + static_cast<int>(threadIdx.x) + u * Tr::kThreads;
        if (static_cast<int>(threadIdx.x) + u * Tr::kThreads < VT && col < V)
          p.segment_log_decay[(bc.item * p.heads + h) * V + col] = static_cast<float>(segment_log2[u]);
      }
    }
  } else if (last_segment && p.final_state) {
    state_to_global<Tr>(S, p.final_state, p.s_final, it.seq, h, c0, K, V);
  }
}

}  // namespace lcsm::cuda::detail
