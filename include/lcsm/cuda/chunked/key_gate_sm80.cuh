// The vector gate's chunk factors on the mma.sync kernel. A chunk is one sub-chunk of C = 32 tokens
// (16 for K > 128): with L_i the cumulative log-gate of token i inside the chunk (per key) and
// T = L_{C-1},
//   O_i  = (q_i (.) e^{L_i}) S + sum_{j <= i} P_ij v_j,   P_ij = sum_k q_ik k_jk e^{L_ik - L_jk}
//   S    = diag(e^T) S + sum_j (k_j (.) e^{T - L_j}) v_j^T
// Every exponent of the output and state terms is <= 0 (L is non-increasing). The decayed operands
// Q~ = q (.) e^L and K~ = k (.) e^{T - L} are formed once per chunk into shared memory (hi, and lo
// when exact or for split inputs) and feed the same MMAs as lightning's q and k.
// The diagonal scores P: where the chunk's gates are gentle (|L| <= kSeparableRange, log2 units,
// for every key and token) P = mask(Q~ K^T) with K^ = k (.) e^{-L}, one MMA tile: the factors e^{-L_j} lie in
// [1, 2^64], so K^ neither overflows nor loses bits (bf16 has float's exponent range), and each
// product q_ik k_jk e^{L_ik} e^{-L_jk} carries the same relative rounding as the elementwise factor
// e^{L_ik - L_jk}. Where a chunk is steeper (or its gates are not finite) P is summed elementwise,
// C (C + 1) / 2 pairs x K, with only exponentials of non-positive numbers.
// L is kept in log2 units, summed as a compensated float pair hi + lo (hi in place of the gates, lo
// as bf16 in its own tile; as accurate as a double sum, whose conversions cost 20% of the kernel's
// time), every factor formed as 2^{(a_hi - b_hi) + (a_lo - b_lo)}: the hi difference is exact
// wherever the factor is not negligible (Sterbenz), so factors between tokens long after a strong
// gate (|L| in the thousands) keep float accuracy. Device code.
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
  __nv_bfloat16 *uh, *ul;            // K^ (Tr::kSeparableScores only)
  __nv_bfloat16* gate_lo;            // L's lo parts, rows of Tr::kKP
  float* state_factor;               // e^{T}, per key
  __device__ KeyGateTiles(__nv_bfloat16* smem, unsigned char* smem_raw) {
    qh = smem + Tr::kOffDecayed, ql = qh + Tr::kQ, kh = ql + Tr::kQ, kl = kh + Tr::kQ;
    uh = kl + Tr::kQ, ul = uh + Tr::kQ;
    gate_lo = smem + Tr::kOffGateLo;
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

// Eight floats from a 16-byte aligned row of shared memory.
__device__ __forceinline__ void load_floats8(float (&x)[8], const float* src) {
  const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
  x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
}

// Eight bf16 values of a 16-byte aligned row as floats.
__device__ __forceinline__ void load_bf16x8(float (&x)[8], const __nv_bfloat16* src) { load8<false>(x, src, nullptr); }

// Eight floats as bf16 hi (and lo) 16-byte rows.
template <bool kLo>
__device__ __forceinline__ void store8(const float (&x)[8], __nv_bfloat16* hi, __nv_bfloat16* lo) {
  std::uint32_t h[4], l[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) split_pack_bf16(x[2 * e], x[2 * e + 1], h[e], l[e]);
  *reinterpret_cast<uint4*>(hi) = make_uint4(h[0], h[1], h[2], h[3]);
  if constexpr (kLo) *reinterpret_cast<uint4*>(lo) = make_uint4(l[0], l[1], l[2], l[3]);
}

// The largest |L| (log2 units, any key and token of a chunk) for which the diagonal scores are one
// MMA tile.
constexpr float kSeparableRange = 64.f;

// Step 1, one thread per gate column (a key; the value gate's value column): the gates of the stage
// become L (log2 units, in place), the state factor e^T is stored, and T is added to the segment's
// running total (log2, double, per column). Returns whether this thread's columns are gentle
// (|L_i| <= kSeparableRange for every i; false for NaN).
template <class Tr>
constexpr int kKeysPerThread = (Tr::kGateCols + Tr::kThreads - 1) / Tr::kThreads;

template <class Tr>
__device__ __forceinline__ bool key_gate_cumulate(float* gates, __nv_bfloat16* gate_lo, float* state_factor,
                                                  double (&segment_log2)[kKeysPerThread<Tr>]) {
  constexpr int C = Tr::kChunk, KT = Tr::kGateCols;
  bool gentle = true;
#pragma unroll
  for (int u = 0; u < kKeysPerThread<Tr>; ++u) {
    const int k = static_cast<int>(threadIdx.x) + u * Tr::kThreads;
    if (k >= KT) break;
    float g[C];  // all loads first: the sum's chain is then register latency only
#pragma unroll
    for (int r = 0; r < C; ++r) g[r] = gates[r * Tr::kGP + k];
    // L = sum of g log2(e) as an unevaluated float pair (hi, lo): each product's rounding error
    // (TwoProduct by FMA, plus log2(e)'s own) and each addition's (TwoSum) go into lo. The __f*_rn
    // intrinsics keep the compiler from contracting them into FMAs, which would break the identities.
    float hi = 0.f, lo = 0.f, h = 0.f, l = 0.f;
#pragma unroll
    for (int r = 0; r < C; ++r) {
      const float p = __fmul_rn(g[r], kLog2eHi);
      const float p_err = fmaf(g[r], kLog2eHi, -p) + g[r] * kLog2eLo;
      const float s = __fadd_rn(hi, p), b = __fsub_rn(s, hi);
      const float s_err = __fadd_rn(__fsub_rn(hi, __fsub_rn(s, b)), __fsub_rn(p, b));
      hi = s, lo += s_err + p_err;
      h = __fadd_rn(hi, lo), l = __fsub_rn(lo, __fsub_rn(h, hi));  // normalised: |l| <= ulp(h) / 2
      gates[r * Tr::kGP + k] = h;
      gate_lo[r * Tr::kGateLoPitch + k] = __float2bfloat16_rn(l);
      // Every L, not only T: gates are not read for their sign on the GPU (a positive one is the
      // caller's error, but still must not turn K^ into infinities).
      gentle = gentle && h >= -kSeparableRange && h <= kSeparableRange;
    }
    state_factor[k] = exp2_pair(h, l);
    segment_log2[u] += static_cast<double>(h) + static_cast<double>(l);
  }
  return gentle;
}

// Step 2 (after a barrier): Q~ (unless kDeltaOnly) and K~ from the stage's q, k and L; then, unless
// kDeltaOnly, the operands of the caller's score MMAs (after a barrier) into the K^ tile and, for a
// steep chunk, its diagonal 16 x 16 blocks of P elementwise into sPh / sPl:
//   separable: K^ = k e^{-L} (all rows), P = mask(Q~ K^T);
//   steep, C = 32: rows j < 16 k_j e^{L_15 - L_j}, rows i >= 16 q_i e^{L_i - L_15} (exponents <= 0),
//   whose product is the off-diagonal block of P (rows 16.., columns ..15); the two diagonal blocks
//   elementwise (2 x 136 pairs x K instead of 528 x K).
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void key_gate_operands(const StageTiles<Tr>& st, const KeyGateTiles<Tr>& kg,
                                                  __nv_bfloat16* sPh, __nv_bfloat16* sPl, bool separable) {
  constexpr int C = Tr::kChunk, KT = Tr::kKeyTile, kGroups = KT / 8;
  constexpr bool kSplit = Tr::kSplitInputs;
  const float* L = st.gates;
  const float* T = L + (C - 1) * Tr::kGP;  // gates past the chunk's end are zero: L_{C-1} = L_{c-1}
  const float* M = L + 15 * Tr::kGP;       // the first block's end: the off-diagonal block's centre
  const __nv_bfloat16* Llo = kg.gate_lo;   // L's lo parts
  for (int g = threadIdx.x; g < C * kGroups; g += Tr::kThreads) {
    const int r = g / kGroups, k0 = (g % kGroups) * 8, off = r * Tr::kKP + k0;
    float l[8], t[8], ll[8], tl[8], k[8], x[8];
    load_floats8(l, L + r * Tr::kGP + k0);
    load_floats8(t, T + k0);
    load_bf16x8(ll, Llo + off);
    load_bf16x8(tl, Llo + (C - 1) * Tr::kKP + k0);
    load8<kSplit>(k, st.kh + off, st.kl + off);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = k[e] * exp2_pair(t[e] - l[e], tl[e] - ll[e]);
    store8<Tr::kLoQK>(x, kg.kh + off, kg.kl + off);
    if constexpr (!kDeltaOnly) {
      float q[8];
      load8<kSplit>(q, st.qh + off, st.ql + off);
      if constexpr (Tr::kSeparableScores) {
        static_assert(!Tr::kSeparableScores || C == 32, "the K^ tile's steep use assumes two 16-token blocks");
        if (separable) {
#pragma unroll
          for (int e = 0; e < 8; ++e) x[e] = k[e] * exp2_pair(-l[e], -ll[e]);
        } else {
          float m[8], ml[8];
          load_floats8(m, M + k0);
          load_bf16x8(ml, Llo + 15 * Tr::kKP + k0);
#pragma unroll
          for (int e = 0; e < 8; ++e)
            x[e] = r < 16 ? k[e] * exp2_pair(m[e] - l[e], ml[e] - ll[e]) : q[e] * exp2_pair(l[e] - m[e], ll[e] - ml[e]);
        }
        store8<true>(x, kg.uh + off, kg.ul + off);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) x[e] = q[e] * exp2_pair(l[e], ll[e]);
      // The scores' operands keep their lo terms in fast mode too (P is then rounded once, as the
      // elementwise sum is); the output's Q~ S reads the lo term only when kLoQK.
      if (Tr::kSeparableScores && separable) store8<true>(x, kg.qh + off, kg.ql + off);
      else store8<Tr::kLoQK>(x, kg.qh + off, kg.ql + off);
    }
  }
  if (Tr::kSeparableScores && separable) return;
  if constexpr (!kDeltaOnly) {
    // The diagonal 16 x 16 blocks of P: P_ij for j <= i, zero above the diagonal; rows and columns
    // past the chunk's end have zero q, k. Each block's entries in triangular order, its 136 sums
    // first, so that the lanes of a warp do the same work (the exponentials, 16 a cycle per SM, are
    // the cost).
    constexpr int kLower = 16 * 17 / 2;
    for (int n = threadIdx.x; n < C * 16; n += Tr::kThreads) {
      const int b = (n / 256) * 16, e = n % 256;  // the block's first row and column; the entry
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
      i += b, j += b;
      float acc = 0.f;
      if (j <= i) {
        for (int k0 = 0; k0 < KT; k0 += 8) {
          float qi[8], kj[8], li[8], lj[8];
          load8<kSplit>(qi, st.qh + i * Tr::kKP + k0, st.ql + i * Tr::kKP + k0);
          load8<kSplit>(kj, st.kh + j * Tr::kKP + k0, st.kl + j * Tr::kKP + k0);
          load_bf16x8(li, Llo + i * Tr::kKP + k0);
          load_bf16x8(lj, Llo + j * Tr::kKP + k0);
#pragma unroll
          for (int u = 0; u < 8; ++u)
            acc += qi[u] * kj[u] * exp2_pair(L[i * Tr::kGP + k0 + u] - L[j * Tr::kGP + k0 + u], li[u] - lj[u]);
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
