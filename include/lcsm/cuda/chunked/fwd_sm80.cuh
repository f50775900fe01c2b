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

#include "lcsm/cuda/chunked/chunk_mma_sm80.cuh"
#include "lcsm/cuda/chunked/cosine_sm80.cuh"
#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/key_gate_sm80.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/tiles_sm80.cuh"
#include "lcsm/cuda/chunked/value_gate_sm80.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/mma_sm80.cuh"

namespace lcsm::cuda::detail {

// The decay policy object of a kernel (the column gates have none: key_gate_sm80.cuh and
// value_gate_sm80.cuh; their scores are masked only).
struct NoChunkDecay {
  __device__ bool active() const { return false; }
  __device__ float mask(int, int) const { return 1.f; }
};
template <class Tr>
__device__ __forceinline__ auto chunk_decay(const RecurrenceParams& p, const Item& it, int h, unsigned char* smem_raw) {
  if constexpr (Tr::kCosine) {
    return CosineTiles<Tr>(smem_raw).make_mask(cos_sequence(p, it.seq, it.length));
  } else if constexpr (Tr::kColumnGate) {
    return NoChunkDecay{};
  } else if constexpr (Tr::kTokenGate) {
    return TokenDecay<Tr::kChunk>::make(reinterpret_cast<float4*>(smem_raw + Tr::kOffDecay) +
                                        (threadIdx.x / 32) * Tr::kChunk);
  } else {
    return HeadDecay::make<Tr::kChunk>(p, h, reinterpret_cast<float*>(smem_raw + Tr::kOffDecay));
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
  const CosineTiles<Tr> ct(smem_raw);

  // The vector gate's fallback: only the work the sm_90a launch before it gave up (params.cuh).
  if (!kDeltaOnly && p.fallback_only && !p.fallback_flags[blockIdx.x]) return;
  const BlockCoords bc = block_coords(p);
  Item it;
  if (!decode_item(p, bc.item, it)) return;
  const bool last_segment = it.segment + 1 >= it.segments;
  if (kDeltaOnly && last_segment && !p.last_delta) return;  // its contribution is needed by sequence parallelism only

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, h = bc.head;
  const int K = p.key_dim, V = p.value_dim, c0 = bc.value_block * VT;
  auto decay = chunk_decay<Tr>(p, it, h, smem_raw);
  double segment_log2[kKeysPerThread<Tr>] = {};  // the segment's total log2-decay (gates)
  // cosFormer: the sequence's positions, whether the outputs read the whole sequence's sums (then
  // nothing is updated), and which z buffer holds the sums before the chunk.
  [[maybe_unused]] CosSequence cos_seq{};
  if constexpr (Tr::kCosine) cos_seq = cos_sequence(p, it.seq, it.length);
  const bool bidirectional = Tr::kCosine && !kDeltaOnly && p.bidirectional;
  // f(std::bool_constant<lo>) with lo whether the q and k operands carry a lo term: the stage's
  // (split inputs), or for cosFormer its features' (cos_features_lo: a runtime choice).
  auto with_features_lo = [&](auto&& f) {
    if constexpr (Tr::kCosine && Tr::kStageLoQK && !Tr::kSplitInputs) {
      if (cos_features_lo<Tr>(p)) f(std::true_type{});
      else f(std::false_type{});
    } else {
      f(std::bool_constant<Tr::kStageLoQK>{});
    }
  };
  [[maybe_unused]] int zc = 0;

  // The state in global memory: [.., K, V], cosFormer's [.., 2K, V + 1] (z in column V).
  const int SR = Tr::kCosine ? 2 * K : K, SC = Tr::kCosine ? V + 1 : V;
  StateRegs<Tr> S;
  const Strides4 ws{static_cast<std::int64_t>(p.heads) * SR * SC, static_cast<std::int64_t>(SR) * SC, SC, 1};
  const float* start = nullptr;  // where the state before the segment is, and its indices
  Strides4 start_strides = ws;
  std::int64_t start_index = 0;
  if (bidirectional) {  // the whole sequence's sums (slice_fold_kernel)
    start = p.last_delta, start_index = it.seq;
  } else if (!kDeltaOnly && p.segment_states) {  // cut sequences: every segment starts from the scanned state
    start = p.segment_states, start_index = bc.item;
    if (p.segment_states_transposed) start_strides = {ws.s0, ws.s1, 1, SR};
  } else if (!kDeltaOnly && p.initial_state) {
    start = p.initial_state, start_strides = p.s_initial, start_index = it.seq;
  }
  state_from_global<Tr>(S, start, start_strides, start_index, h, c0, K, V);
  if constexpr (Tr::kCosine) cos_z_from_global<Tr>(ct.z, start, start_strides, start_index, h, K, V);
  bool state_zero = start == nullptr;
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
    if constexpr (Tr::kCosine) {
      ct.set_angles(cos_seq, t, c);  // the first warp's sincospi overlaps the other warps' features
      cos_features<Tr, kDeltaOnly>(st, c, K, p.relu);
      __syncthreads();  // phi(q), phi(k), the chunk's angles
    }

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
      if constexpr (Tr::kCosine) {
        if (!kDeltaOnly) cos_state_denominators<Tr>(st, ct, ct.z + zc * Tr::kKeyTile, !state_zero);
      }
      if (!kDeltaOnly && !bidirectional && cw < Tr::kScoreColWarps)
        with_features_lo([&](auto lo) {
          scores_sm80<Tr, decltype(lo)::value>(st.qh, st.ql, st.kh, st.kl, sPh, sPl, decay, r0, cw, lane,
                                               Tr::kCosine ? ct.den_parts + cw * Tr::kChunk : nullptr);
        });
      __syncthreads();  // P complete (and cosFormer's denominator parts)
    }

    if (!kDeltaOnly) {
      float O[Tr::kOutTiles][4] = {};
      float2 row_scale = make_float2(p.scale, p.scale);  // of rows r0 + lane / 4 and + 8 (cosFormer: 1 / den)
      if constexpr (Tr::kValueGate) {
        value_gate_outputs_sm80<Tr>(O, st, vg, sPh, sPl, sSh, sSl, state_zero, steep, rw, r0, v0, lane);
      } else if constexpr (Tr::kCosine) {
        if (!p.cos_numerator) row_scale = cos_inverse_denominators<Tr>(ct, !bidirectional, r0, lane, p.eps);
        with_features_lo([&](auto lo) {
          cos_outputs_sm80<Tr, decltype(lo)::value>(O, st, ct, sPh, sPl, sSh, sSl, !state_zero, !bidirectional, r0, v0,
                                                    lane);
        });
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
          const float f = half ? row_scale.y : row_scale.x;
          const float x0 = f * O[j][2 * half], x1 = f * O[j][2 * half + 1];
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
    } else if constexpr (Tr::kCosine) {  // S += [cs (.) b; sn (.) b]^T V, z likewise
      if (!bidirectional) {
        with_features_lo([&](auto lo) {
          state_update_sm80<Tr, Tr::kSplitInputs, decltype(lo)::value>(
              S, st, nullptr, nullptr, st.vh, st.vl,
              [&](int j, bool sin_half) { return sin_half ? ct.angles[j].y : ct.angles[j].x; }, warp, lane);
        });
        cos_advance_z<Tr>(st, ct, ct.z + zc * Tr::kKeyTile, ct.z + (zc ^ 1) * Tr::kKeyTile);
        zc ^= 1;
      }
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
    if (!kDeltaOnly && !bidirectional && t + C < it.end) state_to_smem<Tr>(S, sSh, sSl);  // read after the next sync
    if constexpr (Tr::kStages == 2) {
      stage ^= 1;
    } else if (t + C < it.end) {
      const std::int64_t cn = it.end - t - C < C ? it.end - t - C : C;
      load_chunk<T, Tr, kDeltaOnly>(smem + Tr::kOffStages, p, it, tg + C, static_cast<int>(cn), h, c0);
    }
  }

  if (kDeltaOnly) {  // delta of segment s: the next slot, or last_delta for a sequence's last segment
    float* dst = last_segment ? p.last_delta : p.segment_states;
    const std::int64_t index = last_segment ? it.seq : bc.item + 1;
    state_to_global<Tr>(S, dst, ws, index, h, c0, K, V);
    if constexpr (Tr::kCosine) {
      if (bc.value_block == 0) cos_z_to_global<Tr>(ct.z + zc * Tr::kKeyTile, dst, ws, index, h, K, V);
    }
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
    if constexpr (Tr::kCosine) {
      if (bc.value_block == 0) cos_z_to_global<Tr>(ct.z + zc * Tr::kKeyTile, p.final_state, p.s_final, it.seq, h, K, V);
    }
  }
}

}  // namespace lcsm::cuda::detail
