// The mma.sync (sm_80+) kernel's traits, shared-memory layout, tile loads and state fragments.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"

namespace lcsm::cuda::detail {

// Tile shapes for a state of KT rows (head dimension K <= KT; cosFormer's 2K <= KT), value columns
// per CTA VT, element type T, whether the state and decayed operands keep a lo bf16 term (kExact),
// and the decay policy.
template <class T, int KT, int VT, bool kExact, DecayKind kDecay>
struct Sm80Traits {
  static constexpr bool kKeyGate = kDecay == DecayKind::key, kTokenGate = kDecay == DecayKind::token;
  static constexpr bool kValueGate = kDecay == DecayKind::value;
  static constexpr bool kCosine = kDecay == DecayKind::cosine;
  static constexpr bool kColumnGate = kKeyGate || kValueGate;  // a gate tile per chunk, not per token
  static constexpr int kKeyTile = KT;
  // Columns of the q and k tiles: the state's rows, except for cosFormer, whose state holds the cos
  // and the sin features of each key (2K rows from K columns).
  static constexpr int kFeatureTile = kCosine ? KT / 2 : KT;
  static constexpr int kValueBlock = VT;
  // Tokens per chunk. The vector gate's chunk is its sub-chunk (key_gate_sm80.cuh): 32 tokens where
  // shared memory allows (K <= 128), else 16; the value gate's is always 32 (value_gate_sm80.cuh).
  static constexpr int kChunk = kValueGate ? 32 : kKeyGate ? (KT <= 128 ? 32 : 16) : (KT > 128 ? 32 : 64);
  // 4 warps per scheduler hide latency; the column gates' chunk has 16 or 32 rows, so their warps
  // split the value columns (and the two row blocks of a 32-token chunk).
  static constexpr int kWarps = kKeyGate ? VT / 16 : kValueGate ? VT / 8 : (KT > 128 && VT <= 64 ? 8 : 16);
  static constexpr int kThreads = kWarps * 32;
  static constexpr bool kSplitInputs = !std::is_same_v<T, __nv_bfloat16>;  // inputs not exact in bf16
  static constexpr bool kExactState = kExact;
  // Double-buffered loads (cp.async of the next chunk during this one) where shared memory allows.
  // cosFormer: two in fast mode (no lo state); in exact mode, as the others, except that its
  // 2K = 256-row state with 128 value columns leaves room for one.
  static constexpr int kStages = kKeyGate  ? (KT <= 128 && kSplitInputs ? 1 : 2)
                                 : kCosine ? (!kExact || (!kSplitInputs && KT * VT <= 128 * 128) ? 2 : 1)
                                           : (!kSplitInputs && kFeatureTile <= 128 ? 2 : 1);
  static constexpr int kKP = kFeatureTile + 8, kVP = VT + 8, kPP = kChunk + 8;  // padded rows: no ldmatrix conflicts
  static constexpr int kGateCols = kKeyGate ? KT : VT;                          // gate columns a CTA reads
  static constexpr int kGP = kGateCols + 4;                                     // gate rows (floats)
  // Score / output partition: kChunk / 16 row blocks of 16 tokens x the rest of the warps over columns.
  static constexpr int kRowWarps = kChunk / 16, kColWarps = kWarps / kRowWarps;
  static constexpr int kScoreColWarps = kColWarps < kChunk / 16 ? kColWarps : kChunk / 16;  // >= 2 n-tiles each
  static constexpr int kScoreTiles = kChunk / 8 / kScoreColWarps;  // n-tiles of 8 per warp (scores)
  static constexpr int kOutTiles = VT / 8 / kColWarps;             // n-tiles of 8 per warp (outputs)
  static_assert(kScoreTiles % 2 == 0 && kOutTiles % 2 == 0, "x4 ldmatrix covers two n-tiles");
  // State partition: KT / 16 row tiles over the warps, the rest of the warps split the columns.
  static constexpr int kStateRowWarps = KT / 16 < kWarps ? KT / 16 : kWarps;
  static constexpr int kStateColWarps = kWarps / kStateRowWarps;
  static constexpr int kStateMTiles = KT / 16 / kStateRowWarps;
  static constexpr int kStateNTiles = VT / 8 / kStateColWarps;

  // Shared memory, bf16 elements first. A stage holds Q, K, V (hi, then lo for split inputs) and
  // the chunk's gates (floats).
  static constexpr int kQ = kChunk * kKP, kV = kChunk * kVP, kS = KT * kVP, kP = kChunk * kPP;
  // The stage's q and k tiles carry a lo term for split inputs, and for cosFormer's features in
  // exact mode (1 + ELU is not exact in bf16; cosine_sm80.cuh writes the lo tiles of bf16 inputs).
  static constexpr bool kStageLoQK = kSplitInputs || (kCosine && kExact);
  static constexpr int kStageTiles = 2 * kQ + kV + (kStageLoQK ? 2 * kQ : 0) + (kSplitInputs ? kV : 0);
  static constexpr int kGateFloats = kColumnGate ? kChunk * kGP : (kTokenGate ? kChunk : 0);
  static constexpr int kStage = kStageTiles + 2 * kGateFloats;          // in bf16 elements
  static constexpr bool kSplitP = kSplitInputs || kExact;               // P keeps a lo term
  static constexpr bool kLoQK = kSplitInputs || (kKeyGate && kExact);   // Q, K operands with a lo term
  static constexpr bool kLoV = kSplitInputs || (kValueGate && kExact);  // the value gate's decayed V
  static constexpr int kOffStages = 0;
  static constexpr int kOffP = kOffStages + kStages * kStage;
  static constexpr int kOffSh = kOffP + (kSplitP ? 2 : 1) * kP;
  static constexpr int kOffSl = kOffSh + kS;
  // 16-bit outputs are staged in smem and written as whole 16-byte vectors.
  static constexpr bool kStageOutput = sizeof(T) == 2;
  static constexpr int kOffO = kOffSl + (kExact ? kS : 0);
  // Vector gate: the decayed operands q e^L and k e^(T - L), hi and lo; and, where shared memory
  // allows (K <= 128), k e^(-L) for the diagonal scores of chunks whose gates are gentle enough
  // (key_gate_sm80.cuh). Value gate: v e^(T - L) and v e^(-L) (or its steep form), hi and lo.
  static constexpr bool kSeparableScores = kKeyGate && KT <= 128;
  static constexpr int kOffDecayed = kOffO + (kStageOutput ? kChunk * kVP : 0);
  static constexpr int kDecayedEnd =
      kOffDecayed + (kKeyGate ? (kSeparableScores ? 6 : 4) * kQ : 0) + (kValueGate ? 4 * kV : 0);
  // Column gates: the lo parts of L = hi + lo (bf16, kChunk rows of kGateLoPitch). The vector gate
  // keeps them in the output staging area where that is large enough (their uses end before the
  // outputs are staged), else after; the value gate's outputs use them, so they have their own.
  static constexpr int kGateLoPitch = kKeyGate ? kKP : kVP;
  static constexpr int kGateLo = kColumnGate ? kChunk * kGateLoPitch : 0;
  static constexpr bool kGateLoInO = kKeyGate && kStageOutput && kGateLo <= kChunk * kVP;
  static constexpr int kOffGateLo = kGateLoInO ? kOffO : kDecayedEnd;
  static constexpr int kElems = kDecayedEnd + (kGateLoInO ? 0 : kGateLo);
  // Bytes past the bf16 area: the lambda^p table, the per-warp gate scans, or the per-column state factors.
  static constexpr int kOffDecay = kElems * 2;
  // cosFormer: the mask table (kChunk + 1, padded to 16 bytes), the chunk's (cos, sin) pairs, the
  // key sums z (double-buffered), and the denominators' parts: the score warps' row sums and the
  // state's (chunked/cosine_sm80.cuh).
  static constexpr int kCosMaskBytes = (kChunk + 4) * 4, kCosAnglesBytes = kChunk * 8;
  static constexpr int kCosBytes = kCosMaskBytes + kCosAnglesBytes + 2 * KT * 4 + (kScoreColWarps + 1) * kChunk * 4;
  static constexpr int kDecayBytes =
      kColumnGate ? kGateCols * 4 : (kTokenGate ? kWarps * kChunk * 16 : (kCosine ? kCosBytes : (kChunk + 1) * 4));
  static constexpr int kSmemBytes = kOffDecay + kDecayBytes;
  static_assert(kSmemBytes <= 227 * 1024, "tile does not fit in shared memory");
  static_assert(kStage % 8 == 0 && kOffDecay % 16 == 0, "16-byte aligned regions");
};

// Loads rows [t0, t0 + kRows) x columns [c0, c0 + kWidth) of one head (head points at its
// element (token 0, column 0)) into smem: hi, and lo when the type is not exact in bf16. Whatever
// lies outside [0, count) x [0, dim) is zero-filled. kRows, kWidth and the thread count are
// compile-time, so the index arithmetic reduces to shifts and one multiply-add per row.
template <class T, bool kSplit, int kRows, int kWidth, int kThreads>
__device__ __forceinline__ void load_tile(__nv_bfloat16* hi, __nv_bfloat16* lo, int pitch, const T* head,
                                          std::int64_t row_stride, std::int64_t col_stride, std::int64_t t0, int count,
                                          int c0, int dim, bool vectorized) {
  constexpr int kGroups = kWidth / 8, kTotal = kRows * kGroups;
#pragma unroll
  for (int i = 0; i < (kTotal + kThreads - 1) / kThreads; ++i) {
    const int g = static_cast<int>(threadIdx.x) + i * kThreads;
    if (kTotal % kThreads != 0 && g >= kTotal) break;
    const int r = g / kGroups, c = (g % kGroups) * 8;
    __nv_bfloat16* dh = hi + r * pitch + c;
    const int col = c0 + c;
    if (r >= count || col >= dim) {
      *reinterpret_cast<uint4*>(dh) = make_uint4(0, 0, 0, 0);
      if constexpr (kSplit) *reinterpret_cast<uint4*>(lo + r * pitch + c) = make_uint4(0, 0, 0, 0);
      continue;
    }
    const T* src = head + (t0 + r) * row_stride + col * col_stride;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      if (vectorized && col + 8 <= dim) {
        cp_async_16(dh, src);
        continue;
      }
    }
    float x[8];
    if (vectorized && col + 8 <= dim) {
      if constexpr (sizeof(T) == 2) {
        const uint4 raw = *reinterpret_cast<const uint4*>(src);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int k = 0; k < 8; ++k) x[k] = to_float(e[k]);
      } else {
        const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
        x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
      }
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) x[k] = col + k < dim ? to_float(src[k * col_stride]) : 0.f;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      __nv_bfloat16 h16, l16;
      split_bf16(x[k], h16, l16);
      dh[k] = h16;
      if constexpr (kSplit) lo[r * pitch + c + k] = l16;
    }
  }
}

// The shared-memory tiles of one stage.
template <class Tr>
struct StageTiles {
  __nv_bfloat16 *qh, *kh, *vh, *ql, *kl, *vl;
  float* gates;
  __device__ explicit StageTiles(__nv_bfloat16* stage) {
    qh = stage, kh = qh + Tr::kQ, vh = kh + Tr::kQ;
    ql = vh + Tr::kV, kl = ql + Tr::kQ, vl = kl + Tr::kQ;  // split inputs only
    gates = reinterpret_cast<float*>(stage + Tr::kStageTiles);
  }
};

// Issues the loads of one chunk's q (unless kDeltaOnly), k, v tiles and gates into a stage.
template <class T, class Tr, bool kDeltaOnly>
__device__ __forceinline__ void load_chunk(__nv_bfloat16* stage, const RecurrenceParams& p, const Item& it,
                                           std::int64_t tg, int c, int h, int c0) {
  constexpr bool kSplit = Tr::kSplitInputs;
  constexpr int C = Tr::kChunk, KT = Tr::kKeyTile, KF = Tr::kFeatureTile, VT = Tr::kValueBlock;
  const StageTiles<Tr> s(stage);
  const std::int64_t h64 = h;
  if (!kDeltaOnly)  // a segment's state contribution needs only k, v (and the gates)
    load_tile<T, kSplit, C, KF, Tr::kThreads>(s.qh, s.ql, Tr::kKP,
                                              static_cast<const T*>(p.q) + it.batch * p.sq.s0 + h64 * p.sq.s2, p.sq.s1,
                                              p.sq.s3, tg, c, 0, p.key_dim, p.vectorized);
  load_tile<T, kSplit, C, KF, Tr::kThreads>(s.kh, s.kl, Tr::kKP,
                                            static_cast<const T*>(p.k) + it.batch * p.sk.s0 + h64 * p.sk.s2, p.sk.s1,
                                            p.sk.s3, tg, c, 0, p.key_dim, p.vectorized);
  load_tile<T, kSplit, C, VT, Tr::kThreads>(s.vh, s.vl, Tr::kVP,
                                            static_cast<const T*>(p.v) + it.batch * p.sv.s0 + h64 * p.sv.s2, p.sv.s1,
                                            p.sv.s3, tg, c, c0, p.value_dim, p.vectorized);
  if constexpr (Tr::kKeyGate)
    load_gate_rows<C, KT, Tr::kGP, Tr::kThreads>(s.gates, p, it.batch, it.start, tg, c, h, 0, p.key_dim);
  if constexpr (Tr::kValueGate)
    load_gate_rows<C, VT, Tr::kGP, Tr::kThreads>(s.gates, p, it.batch, it.start, tg, c, h, c0, p.value_dim);
  if constexpr (Tr::kTokenGate) load_token_gates<C, Tr::kThreads>(s.gates, p, it.batch, it.start, tg, c, h);
  cp_async_commit();
}

// The element (row, col) of this warp's state tile (m, j, e), relative to the CTA's block.
template <class Tr>
__device__ __forceinline__ void state_coords(int warp, int lane, int m, int j, int e, int& row, int& col) {
  row = ((warp % Tr::kStateRowWarps) * Tr::kStateMTiles + m) * 16 + lane / 4 + (e >= 2 ? 8 : 0);
  col = ((warp / Tr::kStateRowWarps) * Tr::kStateNTiles + j) * 8 + 2 * (lane % 4) + (e & 1);
}

template <class Tr>
using StateRegs = float[Tr::kStateMTiles][Tr::kStateNTiles][4];

// The global state row of the CTA's state row r, or -1 where it has none (past K): r itself, or for
// cosFormer, whose tile holds the cos features in rows [0, KF) and the sin features in [KF, 2 KF)
// and the global state in rows [0, K) and [K, 2K), K + r - KF in the sin half.
template <class Tr>
__device__ __forceinline__ int global_state_row(int r, int K) {
  if constexpr (Tr::kCosine) {
    const bool sin_half = r >= Tr::kFeatureTile;
    const int feature = sin_half ? r - Tr::kFeatureTile : r;
    return feature < K ? (sin_half ? K : 0) + feature : -1;
  } else {
    return r < K ? r : -1;
  }
}

// This warp's state tiles <-> a [K, V] fp32 state slice in global memory (absent: zeros); K is q's
// head dimension (cosFormer's state has 2K rows: global_state_row).
template <class Tr>
__device__ __forceinline__ void state_from_global(StateRegs<Tr>& acc, const float* s, const Strides4& st,
                                                  std::int64_t n, int h, int col0, int K, int V) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
    for (int j = 0; j < Tr::kStateNTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int r, c;
        state_coords<Tr>(warp, lane, m, j, e, r, c);
        c += col0;
        r = global_state_row<Tr>(r, K);
        acc[m][j][e] = (s && r >= 0 && c < V) ? s[n * st.s0 + h * st.s1 + r * st.s2 + c * st.s3] : 0.f;
      }
}
template <class Tr>
__device__ __forceinline__ void state_to_global(const StateRegs<Tr>& acc, float* s, const Strides4& st, std::int64_t n,
                                                int h, int col0, int K, int V) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
    for (int j = 0; j < Tr::kStateNTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int r, c;
        state_coords<Tr>(warp, lane, m, j, e, r, c);
        c += col0;
        r = global_state_row<Tr>(r, K);
        if (r >= 0 && c < V) s[n * st.s0 + h * st.s1 + r * st.s2 + c * st.s3] = acc[m][j][e];
      }
}

// The state block as the next chunk's MMA operand: bf16 hi (and lo when exact), [KT rows][VT columns].
template <class Tr>
__device__ __forceinline__ void state_to_smem(const StateRegs<Tr>& acc, __nv_bfloat16* sh, __nv_bfloat16* sl) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
    for (int j = 0; j < Tr::kStateNTiles; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        int r, c;
        state_coords<Tr>(warp, lane, m, j, 2 * half, r, c);
        std::uint32_t h32, l32;
        split_pack_bf16(acc[m][j][2 * half], acc[m][j][2 * half + 1], h32, l32);
        *reinterpret_cast<std::uint32_t*>(sh + r * Tr::kVP + c) = h32;
        if constexpr (Tr::kExactState) *reinterpret_cast<std::uint32_t*>(sl + r * Tr::kVP + c) = l32;
      }
}

}  // namespace lcsm::cuda::detail
