// cosFormer on the mma.sync kernel (DecayKind::cosine): the engine's chunk with the cos re-weighting
// as its mask, the feature map applied in shared memory, and the normaliser as row sums.
//
// Per chunk of c tokens with a = phi(q), b = phi(k) (C x K), (cs_i, sn_i) the cos and sin of token
// i's angle pi p_i / 2M, S = [S_cos; S_sin] (2K x V) and z = [z_cos; z_sin] (2K) the sums before
// the chunk (docs/model.md, "cosFormer"):
//   A   = (a b^T) (.) W,  W_ij = cos(pi (i - j) / 2M) for i >= j      the engine's scores, mask W
//   num = cs (.) (a S_cos) + sn (.) (a S_sin) + A V                   two K-row MMAs over S's halves
//   den = rowsum(A) + cs (.) (a z_cos) + sn (.) (a z_sin)              per warp, from shared memory
//   o   = num / max(den, eps)                                          the epilogue's row factor
//   S_cos += (cs (.) b)^T V,  S_sin += (sn (.) b)^T V                 the state MMA, keys scaled
//   z_cos += b^T cs,          z_sin += b^T sn                          one thread per state row
// So the state MMAs have 2K rows but q and k tiles K columns, and the normaliser (the EOS
// instance's V + 1-th value column, a column of ones) never enters an MMA: the value tiles keep
// their shapes. Every weight lies in (0, 1] (positions below M), nothing is exponentiated but
// 1 + ELU's e^x for x <= 0. Non-causal (p.bidirectional): every token reads the whole sequence's
// S, z (the delta launch and slice_fold_kernel sum them into p.last_delta); no scores, no updates.
// Device code.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/chunk_mma_sm80.cuh"
#include "lcsm/cuda/chunked/cosine.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/tiles_sm80.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"

namespace lcsm::cuda::detail {

// The mask W as a decay policy of the scores: pw[d] = cos(pi d / 2M), d = 0 .. C.
struct CosineMask {
  const float* pw;
  __device__ bool active() const { return true; }
  __device__ float mask(int i, int j) const { return pw[i - j]; }
};

// cosFormer's shared memory past the bf16 area (Sm80Traits::kDecayBytes): the mask table, the
// chunk's (cos, sin) pairs (zero past the chunk's end), and z, double-buffered by chunk parity so
// that one chunk's denominators read the sums its update is writing the next of.
template <class Tr>
struct CosineTiles {
  float* pw;
  float2* angles;
  float* z;          // [2][Tr::kKeyTile]
  float* den_parts;  // [Tr::kScoreColWarps][Tr::kChunk]: the score warps' row sums of A
  float* den_state;  // [Tr::kChunk]: cs (a z_cos) + sn (a z_sin)
  __device__ explicit CosineTiles(unsigned char* smem_raw) {
    pw = reinterpret_cast<float*>(smem_raw + Tr::kOffDecay);
    angles = reinterpret_cast<float2*>(smem_raw + Tr::kOffDecay + Tr::kCosMaskBytes);
    z = reinterpret_cast<float*>(smem_raw + Tr::kOffDecay + Tr::kCosMaskBytes + Tr::kCosAnglesBytes);
    den_parts = z + 2 * Tr::kKeyTile;
    den_state = den_parts + Tr::kScoreColWarps * Tr::kChunk;
  }
  // The mask table (visible after the kernel's next barrier).
  __device__ CosineMask make_mask(const CosSequence& sq) const {
    for (int d = threadIdx.x; d <= Tr::kChunk; d += Tr::kThreads)
      pw[d] = static_cast<float>(cospi(static_cast<double>(d) * sq.half_inverse_m));
    return {pw};
  }
  // The angles of tokens t0 .. t0 + c - 1 of the sequence (between the chunk's first barrier and
  // its features' barrier: the previous chunk's readers are past its last one).
  __device__ void set_angles(const CosSequence& sq, std::int64_t t0, int c) const {
    for (int i = threadIdx.x; i < Tr::kChunk; i += Tr::kThreads)
      angles[i] = i < c ? cos_angle(sq, t0 + i) : make_float2(0.f, 0.f);
  }
};

// z (the tile's rows, global_state_row) <-> column V of a [.., 2K, V + 1] state (absent: zeros).
template <class Tr>
__device__ __forceinline__ void cos_z_from_global(float* z, const float* s, const Strides4& st, std::int64_t n, int h,
                                                  int K, int V) {
  for (int r = threadIdx.x; r < Tr::kKeyTile; r += Tr::kThreads) {
    const int g = global_state_row<Tr>(r, K);
    z[r] = s && g >= 0 ? s[n * st.s0 + h * st.s1 + g * st.s2 + V * st.s3] : 0.f;
  }
}
template <class Tr>
__device__ __forceinline__ void cos_z_to_global(const float* z, float* s, const Strides4& st, std::int64_t n, int h,
                                                int K, int V) {
  for (int r = threadIdx.x; r < Tr::kKeyTile; r += Tr::kThreads) {
    const int g = global_state_row<Tr>(r, K);
    if (g >= 0) s[n * st.s0 + h * st.s1 + g * st.s2 + V * st.s3] = z[r];
  }
}

// Whether the features carry a lo term: split inputs, or 1 + ELU in exact mode (ReLU of a bf16 is
// a bf16: its lo tiles are zero and the MMAs skip them).
template <class Tr>
__device__ __forceinline__ bool cos_features_lo(const RecurrenceParams& p) {
  return Tr::kSplitInputs || (Tr::kStageLoQK && !p.relu);
}

// phi in place on the chunk's q (unless kDeltaOnly) and k tiles, rows [0, c) x columns [0, K): the
// zero padding stays zero (1 + ELU maps 0 to 1). The lo tiles (Tr::kStageLoQK) get phi's lo term,
// padding included (bf16 inputs load none); without them (bf16, fast mode) phi is rounded to bf16:
// exact for ReLU, 2^-9 relative for 1 + ELU.
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void cos_features(const StageTiles<Tr>& st, int c, int K, bool relu) {
  constexpr int kGroups = Tr::kFeatureTile / 8;
  __nv_bfloat16* his[2] = {st.kh, st.qh};
  __nv_bfloat16* los[2] = {st.kl, st.ql};
#pragma unroll
  for (int tile = 0; tile < (kDeltaOnly ? 1 : 2); ++tile) {
    for (int g = threadIdx.x; g < Tr::kChunk * kGroups; g += Tr::kThreads) {
      const int r = g / kGroups, col = (g % kGroups) * 8;
      const bool inside = r < c && col < K;
      if (!inside && !Tr::kStageLoQK) continue;
      std::uint32_t* hi = reinterpret_cast<std::uint32_t*>(his[tile] + r * Tr::kKP + col);
      std::uint32_t* lo = reinterpret_cast<std::uint32_t*>(los[tile] + r * Tr::kKP + col);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float2 x = inside ? unpack_bf16(hi[e]) : make_float2(0.f, 0.f);
        if constexpr (Tr::kSplitInputs) {
          const float2 y = unpack_bf16(lo[e]);
          x.x += y.x, x.y += y.y;
        }
        const float f0 = inside && col + 2 * e < K ? cos_phi(relu, x.x) : 0.f;
        const float f1 = inside && col + 2 * e + 1 < K ? cos_phi(relu, x.y) : 0.f;
        std::uint32_t h32, l32;
        split_pack_bf16(f0, f1, h32, l32);
        hi[e] = h32;
        if constexpr (Tr::kStageLoQK) lo[e] = l32;
      }
    }
  }
}

// The state's part of every row's denominator, cs (a z_cos) + sn (a z_sin), into ct.den_state
// (zero when the state is): 8 threads per row, thread i of a row taking columns i, i + 8, .. (8
// consecutive columns per row and step: no bank conflicts), summed by shuffles. Before the
// barrier that completes the scores (readers: cos_inverse_denominators, after it).
template <class Tr>
__device__ __forceinline__ void cos_state_denominators(const StageTiles<Tr>& st, const CosineTiles<Tr>& ct,
                                                       const float* z, bool state) {
  constexpr int KF = Tr::kFeatureTile;
  static_assert(Tr::kThreads % 8 == 0, "8 threads per row");
  for (int base = 0; base < Tr::kChunk * 8; base += Tr::kThreads) {
    const int t = base + static_cast<int>(threadIdx.x), row = t / 8, part = t % 8;
    float dc = 0.f, ds = 0.f;
    if (state && row < Tr::kChunk) {
#pragma unroll 4
      for (int k = part; k < KF; k += 8) {
        float a = __bfloat162float(st.qh[row * Tr::kKP + k]);
        if constexpr (Tr::kStageLoQK) a += __bfloat162float(st.ql[row * Tr::kKP + k]);
        dc += a * z[k];
        ds += a * z[KF + k];
      }
    }
#pragma unroll
    for (int d = 1; d < 8; d *= 2) {
      dc += __shfl_xor_sync(0xFFFFFFFFu, dc, d);
      ds += __shfl_xor_sync(0xFFFFFFFFu, ds, d);
    }
    if (part == 0 && row < Tr::kChunk) {
      const float2 a = ct.angles[row];
      ct.den_state[row] = a.x * dc + a.y * ds;
    }
  }
}

// 1 / max(den, eps) for this lane's output rows r0 + lane / 4 (x) and r0 + lane / 4 + 8 (y): the
// score warps' row sums of A (scores: causal) plus the state's part. NaN stays NaN.
template <class Tr>
__device__ __forceinline__ float2 cos_inverse_denominators(const CosineTiles<Tr>& ct, bool scores, int r0, int lane,
                                                           float eps) {
  float den[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r0 + lane / 4 + 8 * half;
    float d = ct.den_state[row];
    if (scores)
#pragma unroll
      for (int w = 0; w < Tr::kScoreColWarps; ++w) d += ct.den_parts[w * Tr::kChunk + row];
    den[half] = 1.f / (d < eps ? eps : d);
  }
  return make_float2(den[0], den[1]);
}

// z_new = z_old + [b^T cs; b^T sn]: one thread per state row.
template <class Tr>
__device__ __forceinline__ void cos_advance_z(const StageTiles<Tr>& st, const CosineTiles<Tr>& ct, const float* z_old,
                                              float* z_new) {
  constexpr int KF = Tr::kFeatureTile;
  for (int r = threadIdx.x; r < Tr::kKeyTile; r += Tr::kThreads) {
    const bool sin_half = r >= KF;
    const int col = sin_half ? r - KF : r;
    float acc = z_old[r];
#pragma unroll 8
    for (int j = 0; j < Tr::kChunk; ++j) {
      float b = __bfloat162float(st.kh[j * Tr::kKP + col]);
      if constexpr (Tr::kStageLoQK) b += __bfloat162float(st.kl[j * Tr::kKP + col]);
      const float2 a = ct.angles[j];
      acc += (sin_half ? a.y : a.x) * b;
    }
    z_new[r] = acc;
  }
}

// O = cs (.) (a S_cos) + sn (.) (a S_sin) (state) + A V (scores) for rows [r0, r0 + 16) x this
// warp's output columns: the two halves of S in two K-row MMAs, combined in fp32. kQLo: phi(q)
// carries a lo term.
template <class Tr, bool kQLo>
__device__ __forceinline__ void cos_outputs_sm80(float (&O)[Tr::kOutTiles][4], const StageTiles<Tr>& st,
                                                 const CosineTiles<Tr>& ct, const __nv_bfloat16* sPh,
                                                 const __nv_bfloat16* sPl, const __nv_bfloat16* sSh,
                                                 const __nv_bfloat16* sSl, bool state, bool scores, int r0, int v0,
                                                 int lane) {
  constexpr int KF = Tr::kFeatureTile;
  if (state) {
    float Os[Tr::kOutTiles][4] = {};
    output_state_sm80<Tr, kQLo, KF>(O, st.qh, st.ql, sSh, sSl, r0, v0, lane);
    output_state_sm80<Tr, kQLo, KF>(Os, st.qh, st.ql, sSh + KF * Tr::kVP, sSl + KF * Tr::kVP, r0, v0, lane);
    const float2 top = ct.angles[r0 + lane / 4], bottom = ct.angles[r0 + lane / 4 + 8];
#pragma unroll
    for (int j = 0; j < Tr::kOutTiles; ++j) {
      O[j][0] = top.x * O[j][0] + top.y * Os[j][0];
      O[j][1] = top.x * O[j][1] + top.y * Os[j][1];
      O[j][2] = bottom.x * O[j][2] + bottom.y * Os[j][2];
      O[j][3] = bottom.x * O[j][3] + bottom.y * Os[j][3];
    }
  }
  if (scores) output_scores_sm80<Tr, Tr::kSplitInputs>(O, sPh, sPl, st.vh, st.vl, r0, v0, lane);
}

}  // namespace lcsm::cuda::detail
