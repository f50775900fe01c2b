// The vector gate's chunk factors on the mma.sync kernel. A chunk is one sub-chunk of 16 tokens:
// with L_i the cumulative log-gate of token i inside the chunk (per key) and T = L_15,
//   O_i  = (q_i (.) e^{L_i}) S + sum_{j <= i} P_ij v_j,   P_ij = sum_k q_ik k_jk e^{L_ik - L_jk}
//   S    = diag(e^T) S + sum_j (k_j (.) e^{T - L_j}) v_j^T
// Every exponent is <= 0 (L is non-increasing). The decayed operands Q~ = q (.) e^L and
// K~ = k (.) e^{T - L} are formed once per chunk into shared memory (hi, and lo when exact or for
// split inputs) and feed the same MMAs as lightning's q and k; the diagonal scores P, which no
// single pair of scalings can give safely, are summed elementwise (136 pairs x K per chunk).
// L is kept in log2 units in place of the gates. Device code.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/tiles_sm80.cuh"
#include "lcsm/cuda/primitives/exp2.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"

namespace lcsm::cuda::detail {

// Shared-memory operands of the vector gate's chunk (see Sm80Traits::kOffDecayed).
template <class Tr>
struct KeyGateTiles {
  __nv_bfloat16 *qh, *ql, *kh, *kl;  // Q~ and K~
  float* state_factor;               // e^{T}, per key
  __device__ KeyGateTiles(__nv_bfloat16* smem, unsigned char* smem_raw) {
    qh = smem + Tr::kOffDecayed, ql = qh + Tr::kQ, kh = ql + Tr::kQ, kl = kh + Tr::kQ;
    state_factor = reinterpret_cast<float*>(smem_raw + Tr::kOffDecay);
  }
};

// Eight values of a bf16 tile row (hi, plus lo when split) as floats.
template <bool kSplit>
__device__ __forceinline__ void load8(float (&x)[8], const __nv_bfloat16* hi, const __nv_bfloat16* lo) {
  const uint4 h = *reinterpret_cast<const uint4*>(hi);
  const std::uint32_t hw[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 f = unpack_bf16(hw[e]);
    x[2 * e] = f.x, x[2 * e + 1] = f.y;
  }
  if constexpr (kSplit) {
    const uint4 l = *reinterpret_cast<const uint4*>(lo);
    const std::uint32_t lw[4] = {l.x, l.y, l.z, l.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = unpack_bf16(lw[e]);
      x[2 * e] += f.x, x[2 * e + 1] += f.y;
    }
  }
}

// Eight floats as bf16 hi (and lo) 16-byte rows.
template <bool kLo>
__device__ __forceinline__ void store8(const float (&x)[8], __nv_bfloat16* hi, __nv_bfloat16* lo) {
  std::uint32_t h[4], l[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) split_pack_bf16(x[2 * e], x[2 * e + 1], h[e], l[e]);
  *reinterpret_cast<uint4*>(hi) = make_uint4(h[0], h[1], h[2], h[3]);
  if constexpr (kLo) *reinterpret_cast<uint4*>(lo) = make_uint4(l[0], l[1], l[2], l[3]);
}

// Step 1, one thread per key: the gates of the stage become L (log2 units, in place), the state
// factor e^T is stored, and T is added to the segment's running total (log2, double, per key).
template <class Tr>
constexpr int kKeysPerThread = (Tr::kKeyTile + Tr::kThreads - 1) / Tr::kThreads;

template <class Tr>
__device__ __forceinline__ void key_gate_cumulate(float* gates, float* state_factor,
                                                  double (&segment_log2)[kKeysPerThread<Tr>]) {
  constexpr int C = Tr::kChunk, KT = Tr::kKeyTile;
#pragma unroll
  for (int u = 0; u < kKeysPerThread<Tr>; ++u) {
    const int k = static_cast<int>(threadIdx.x) + u * Tr::kThreads;
    if (k >= KT) break;
    float run = 0.f;
#pragma unroll
    for (int r = 0; r < C; ++r) {
      run += gates[r * Tr::kGP + k] * static_cast<float>(kLog2e);
      gates[r * Tr::kGP + k] = run;
    }
    state_factor[k] = exp2_ftz(run);
    segment_log2[u] += run;
  }
}

// Step 2 (after a barrier): Q~ (unless kDeltaOnly) and K~ from the stage's q, k and L; then the
// diagonal scores P (unless kDeltaOnly) into sPh / sPl.
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void key_gate_operands(const StageTiles<Tr>& st, const KeyGateTiles<Tr>& kg,
                                                  __nv_bfloat16* sPh, __nv_bfloat16* sPl) {
  constexpr int C = Tr::kChunk, KT = Tr::kKeyTile, kGroups = KT / 8;
  constexpr bool kSplit = Tr::kSplitInputs;
  const float* L = st.gates;
  const float* T = L + (C - 1) * Tr::kGP;  // gates past the chunk's end are zero: L_{C-1} = L_{c-1}
  for (int g = threadIdx.x; g < C * kGroups; g += Tr::kThreads) {
    const int r = g / kGroups, k0 = (g % kGroups) * 8, off = r * Tr::kKP + k0;
    float l[8], x[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) l[e] = L[r * Tr::kGP + k0 + e];
    load8<kSplit>(x, st.kh + off, st.kl + off);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] *= exp2_ftz(T[k0 + e] - l[e]);
    store8<Tr::kLoQK>(x, kg.kh + off, kg.kl + off);
    if constexpr (!kDeltaOnly) {
      load8<kSplit>(x, st.qh + off, st.ql + off);
#pragma unroll
      for (int e = 0; e < 8; ++e) x[e] *= exp2_ftz(l[e]);
      store8<Tr::kLoQK>(x, kg.qh + off, kg.ql + off);
    }
  }
  if constexpr (!kDeltaOnly) {
    // P_ij for j <= i, zero above the diagonal; rows and columns past the chunk's end have zero q, k.
    // Entries in triangular order, the C (C + 1) / 2 sums first, so that the lanes of a warp do the
    // same work (the exponentials, 16 a cycle per SM, are the cost).
    constexpr int kLower = C * (C + 1) / 2;
    for (int e = threadIdx.x; e < C * C; e += Tr::kThreads) {
      int i = 0, j;
      if (e < kLower) {
        while ((i + 1) * (i + 2) / 2 <= e) ++i;
        j = e - i * (i + 1) / 2;
      } else {  // strictly upper: (row j, column i) of the strict lower triangle, transposed
        const int u = e - kLower;
        int r = 1;
        while ((r + 1) * r / 2 <= u) ++r;
        i = u - r * (r - 1) / 2;
        j = r;
      }
      float acc = 0.f;
      if (j <= i) {
        for (int k0 = 0; k0 < KT; k0 += 8) {
          float qi[8], kj[8];
          load8<kSplit>(qi, st.qh + i * Tr::kKP + k0, st.ql + i * Tr::kKP + k0);
          load8<kSplit>(kj, st.kh + j * Tr::kKP + k0, st.kl + j * Tr::kKP + k0);
#pragma unroll
          for (int u = 0; u < 8; ++u)
            acc += qi[u] * kj[u] * exp2_ftz(L[i * Tr::kGP + k0 + u] - L[j * Tr::kGP + k0 + u]);
        }
      }
      __nv_bfloat16 hi, lo;
      split_bf16(acc, hi, lo);
      sPh[i * Tr::kPP + j] = hi;
      if constexpr (Tr::kSplitP) sPl[i * Tr::kPP + j] = lo;
    }
  }
}

}  // namespace lcsm::cuda::detail
