// Lightning attention on tensor cores: the chunked algorithm, one CTA per (segment of a sequence,
// head, block of 64 value columns).
//
// Per chunk of C tokens (S: the K x 64 state block at the chunk start, lambda^p from a table):
//   A = Q K^T (scores)  ->  P = A (.) D, D_ij = lambda^(i-j) for i >= j else 0 (a select)
//   O = scale * (diag(lambda^(i+1)) Q S + P V)
//   S = lambda^c S + (diag(lambda^(c-1-j)) K)^T V
// All products run as bf16 m16n8k16 MMAs with fp32 accumulation. Operands that are not exact in
// bf16 are split into hi + lo bf16 terms (products: hi*hi + hi*lo + lo*hi), which keeps about 16
// mantissa bits: the state S, the decayed keys, the scores P and, for fp16/fp32 inputs, q, k, v.
// The state never leaves the CTA's registers between chunks; it goes through shared memory (as
// hi/lo bf16) only to serve as the next chunk's MMA operand.
//
// Long sequences with few heads are cut into segments: a first launch (kDeltaOnly) computes each
// segment's state contribution from zero, a scan turns them into segment start states, and the
// output launch runs every segment from its start state.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/lightning_params.cuh"
#include "lcsm/cuda/mma.cuh"

namespace lcsm::cuda::detail {

// Tile shapes for head dimension K <= KT and element type T.
template <class T, int KT>
struct LightningTraits {
  static constexpr int kKeyTile = KT;
  static constexpr int kChunk = KT > 128 ? 32 : 64;  // tokens per chunk
  static constexpr int kValueBlock = 64;             // value columns per CTA
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  // Inputs exact in bf16 need no lo part.
  static constexpr bool kSplitInputs = !std::is_same_v<T, __nv_bfloat16>;
  static constexpr int kKP = KT + 8;           // padded smem row (bf16 elements): no ldmatrix conflicts
  static constexpr int kVP = kValueBlock + 8;  //
  static constexpr int kRowsPerWarp = KT / kWarps;  // state rows each warp owns
  static constexpr int kStateMTiles = kRowsPerWarp / 16;
  static constexpr int kVTiles = kValueBlock / 8;
  static constexpr int kCTiles = kChunk / 8;

  // Shared memory, in bf16 elements. Q's buffers are reused for the decayed keys W after the
  // output products are done.
  static constexpr int kQ = kChunk * kKP, kK = kChunk * kKP, kV = kChunk * kVP, kS = KT * kVP;
  static constexpr int kOffQh = 0;
  static constexpr int kOffQl = kOffQh + kQ;
  static constexpr int kOffKh = kOffQl + (kSplitInputs ? kQ : 0);
  static constexpr int kOffKl = kOffKh + kK;
  static constexpr int kOffVh = kOffKl + (kSplitInputs ? kK : 0);
  static constexpr int kOffVl = kOffVh + kV;
  static constexpr int kOffWl = kOffVl + (kSplitInputs ? kV : 0);  // W lo (bf16 inputs have no Ql)
  static constexpr int kOffSh = kOffWl + (kSplitInputs ? 0 : kQ);
  static constexpr int kOffSl = kOffSh + kS;
  static constexpr int kElems = kOffSl + kS;
  static constexpr int kOffPow = kElems * 2;  // bytes: float table of lambda^p, p = 0..kChunk
  static constexpr int kSmemBytes = kOffPow + (kChunk + 1) * 4;
};

// One work item: a segment [begin, end) of sequence `seq` (tokens start + begin .. of row `batch`).
struct Item {
  std::int64_t seq, batch, start, length, begin, end;
  std::int64_t segment, segments;
};

template <class Index>
__device__ __forceinline__ std::int64_t load_offset(const void* p, std::int64_t i) {
  return static_cast<std::int64_t>(static_cast<const Index*>(p)[i]);
}
__device__ __forceinline__ std::int64_t cu_offset(const LightningParams& p, std::int64_t i) {
  const std::int64_t x = p.cu_seqlens_int64 ? load_offset<std::int64_t>(p.cu_seqlens, i)
                                            : load_offset<std::int32_t>(p.cu_seqlens, i);
  return x < 0 ? 0 : (x > p.time ? p.time : x);  // contents are not validated: never index outside
}

// Maps a global segment index to its sequence and token range; false past the last segment.
__device__ __forceinline__ bool decode_item(const LightningParams& p, std::int64_t item, Item& it) {
  if (!p.cu_seqlens) {
    it.seq = item / p.segments_per_seq;
    it.segment = item % p.segments_per_seq;
    it.segments = p.segments_per_seq;
    it.batch = it.seq;
    it.start = 0;
    it.length = p.time;
  } else if (!p.segment_offsets) {  // varlen, one segment per sequence
    if (item >= p.sequences) return false;
    it.seq = item;
    it.segment = 0;
    it.segments = 1;
    it.batch = 0;
    it.start = cu_offset(p, item);
    it.length = cu_offset(p, item + 1) - it.start;
    if (it.length < 0) it.length = 0;
  } else {
    if (item >= p.segment_offsets[p.sequences]) return false;
    std::int64_t lo = 0, hi = p.sequences;  // largest n with offsets[n] <= item
    while (hi - lo > 1) {
      const std::int64_t mid = (lo + hi) / 2;
      if (p.segment_offsets[mid] <= item) lo = mid;
      else hi = mid;
    }
    it.seq = lo;
    it.segment = item - p.segment_offsets[lo];
    it.segments = p.segment_offsets[lo + 1] - p.segment_offsets[lo];
    it.batch = 0;
    it.start = cu_offset(p, lo);
    it.length = cu_offset(p, lo + 1) - it.start;
    if (it.length < 0) it.length = 0;
  }
  it.begin = it.segment * p.segment_len;
  it.end = it.begin + p.segment_len < it.length ? it.begin + p.segment_len : it.length;
  if (it.begin > it.end) it.begin = it.end;
  return true;
}

// Loads rows [t0, t0 + rows) x columns [c0, c0 + width) of one head into smem (hi, and lo when
// the type is not exact in bf16), zero-filling whatever lies outside [0, count) x [0, dim).
template <class T, bool kSplit>
__device__ __forceinline__ void load_tile(__nv_bfloat16* hi, __nv_bfloat16* lo, int pitch, const T* base,
                                          const Strides4& s, std::int64_t batch, std::int64_t t0, int h,
                                          int count, int rows, int c0, int width, int dim, bool vectorized) {
  const int groups = width / 8;
  for (int g = threadIdx.x; g < rows * groups; g += blockDim.x) {
    const int r = g / groups, c = (g % groups) * 8;
    __nv_bfloat16* dh = hi + r * pitch + c;
    const int col = c0 + c;
    const T* src = base + batch * s.s0 + (t0 + r) * s.s1 + static_cast<std::int64_t>(h) * s.s2 + col * s.s3;
    if (r >= count || col >= dim) {
      *reinterpret_cast<uint4*>(dh) = make_uint4(0, 0, 0, 0);
      if constexpr (kSplit) *reinterpret_cast<uint4*>(lo + r * pitch + c) = make_uint4(0, 0, 0, 0);
      continue;
    }
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
        for (int i = 0; i < 8; ++i) x[i] = to_float(e[i]);
      } else {
        const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
        x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) x[i] = col + i < dim ? to_float(src[i * s.s3]) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      __nv_bfloat16 h16, l16;
      split_bf16(x[i], h16, l16);
      dh[i] = h16;
      if constexpr (kSplit) lo[r * pitch + c + i] = l16;
    }
  }
}

// acc[m][n] (this warp's state rows) <-> a [K, V] fp32 state slice in global memory.
template <class Tr>
__device__ __forceinline__ void state_from_global(float (&acc)[Tr::kStateMTiles][Tr::kVTiles][4], const float* s,
                                                  const Strides4& st, std::int64_t n, int h, int row0, int col0,
                                                  int K, int V) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
    for (int j = 0; j < Tr::kVTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = row0 + m * 16 + lane / 4 + (e >= 2 ? 8 : 0);
        const int c = col0 + j * 8 + 2 * (lane % 4) + (e & 1);
        acc[m][j][e] = (s && r < K && c < V) ? s[n * st.s0 + h * st.s1 + r * st.s2 + c * st.s3] : 0.f;
      }
}
template <class Tr>
__device__ __forceinline__ void state_to_global(const float (&acc)[Tr::kStateMTiles][Tr::kVTiles][4], float* s,
                                                const Strides4& st, std::int64_t n, int h, int row0, int col0,
                                                int K, int V) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
    for (int j = 0; j < Tr::kVTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = row0 + m * 16 + lane / 4 + (e >= 2 ? 8 : 0);
        const int c = col0 + j * 8 + 2 * (lane % 4) + (e & 1);
        if (r < K && c < V) s[n * st.s0 + h * st.s1 + r * st.s2 + c * st.s3] = acc[m][j][e];
      }
}

// The state block as the next chunk's MMA operand: hi/lo bf16, [K rows][64 columns].
template <class Tr>
__device__ __forceinline__ void state_to_smem(const float (&acc)[Tr::kStateMTiles][Tr::kVTiles][4],
                                              __nv_bfloat16* sh, __nv_bfloat16* sl, int row0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
    for (int j = 0; j < Tr::kVTiles; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = row0 + m * 16 + lane / 4 + half * 8, c = j * 8 + 2 * (lane % 4);
        std::uint32_t h32, l32;
        split_pack_bf16(acc[m][j][2 * half], acc[m][j][2 * half + 1], h32, l32);
        *reinterpret_cast<std::uint32_t*>(sh + r * Tr::kVP + c) = h32;
        *reinterpret_cast<std::uint32_t*>(sl + r * Tr::kVP + c) = l32;
      }
}

template <class T, int KT, bool kDeltaOnly>
__global__ void __launch_bounds__(LightningTraits<T, KT>::kThreads)
    lightning_chunks_kernel(const __grid_constant__ LightningParams p) {
  using Tr = LightningTraits<T, KT>;
  constexpr int C = Tr::kChunk, VB = Tr::kValueBlock;
  constexpr bool kSplit = Tr::kSplitInputs;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16 *sQh = smem + Tr::kOffQh, *sQl = smem + Tr::kOffQl, *sKh = smem + Tr::kOffKh,
                *sKl = smem + Tr::kOffKl, *sVh = smem + Tr::kOffVh, *sVl = smem + Tr::kOffVl;
  __nv_bfloat16 *sWh = sQh, *sWl = kSplit ? sQl : smem + Tr::kOffWl;
  __nv_bfloat16 *sSh = smem + Tr::kOffSh, *sSl = smem + Tr::kOffSl;
  float* pw = reinterpret_cast<float*>(smem_raw + Tr::kOffPow);

  const int vb = blockIdx.x % p.value_blocks;
  const int h = (blockIdx.x / p.value_blocks) % p.heads;
  const std::int64_t item_index = blockIdx.x / (static_cast<std::int64_t>(p.value_blocks) * p.heads);
  Item it;
  if (!decode_item(p, item_index, it)) return;
  const bool last_segment = it.segment + 1 >= it.segments;
  if (kDeltaOnly && last_segment) return;  // the last segment's contribution is never needed

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int K = p.key_dim, V = p.value_dim, c0 = vb * VB;
  const double g = p.log_decay[h];
  const bool decayed = g != 0.0;
  for (int i = threadIdx.x; i <= C; i += blockDim.x) pw[i] = static_cast<float>(exp(g * i));

  // The state block this warp owns: rows [row0, row0 + KT / 4) x the CTA's 64 value columns.
  const int row0 = warp * Tr::kRowsPerWarp;
  float S[Tr::kStateMTiles][Tr::kVTiles][4];
  bool state_zero = true;
  if (!kDeltaOnly) {
    if (it.segment > 0) {
      const Strides4 ws{static_cast<std::int64_t>(p.heads) * K * V, static_cast<std::int64_t>(K) * V, V, 1};
      state_from_global<Tr>(S, p.segment_states, ws, item_index - 1, h, row0, c0, K, V);
      state_zero = false;
    } else if (p.initial_state) {
      state_from_global<Tr>(S, p.initial_state, p.s_initial, it.seq, h, row0, c0, K, V);
      state_zero = false;
    } else {
      state_from_global<Tr>(S, nullptr, p.s_initial, 0, 0, row0, c0, K, V);
    }
    if (!state_zero) state_to_smem<Tr>(S, sSh, sSl, row0);
  } else {
    state_from_global<Tr>(S, nullptr, p.s_initial, 0, 0, row0, c0, K, V);
  }

  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* o = static_cast<T*>(p.o);

  for (std::int64_t t = it.begin; t < it.end; t += C) {
    const int c = static_cast<int>(it.end - t < C ? it.end - t : C);
    const std::int64_t tg = it.start + t;  // first token of the chunk in the batch row
    __syncthreads();  // previous chunk's readers of sQ/sK/sV/sW are done
    if (!kDeltaOnly) load_tile<T, kSplit>(sQh, sQl, Tr::kKP, q, p.sq, it.batch, tg, h, c, C, 0, KT, K, p.vectorized);
    load_tile<T, kSplit>(sKh, sKl, Tr::kKP, k, p.sk, it.batch, tg, h, c, C, 0, KT, K, p.vectorized);
    load_tile<T, kSplit>(sVh, sVl, Tr::kVP, v, p.sv, it.batch, tg, h, c, C, c0, VB, V, p.vectorized);
    cp_async_wait_all();
    __syncthreads();

    if (!kDeltaOnly && warp * 16 < C) {
      // ---- Outputs of this warp's 16 rows: scores, mask, then O = lambda^(i+1) Q S + P V. ----
      const int r0 = warp * 16;
      float A[Tr::kCTiles][4];
#pragma unroll
      for (int j = 0; j < Tr::kCTiles; ++j) A[j][0] = A[j][1] = A[j][2] = A[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KT / 16; ++kk) {
        std::uint32_t qh[4], ql[4];
        ldmatrix_x4(qh, sQh + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
        if constexpr (kSplit) ldmatrix_x4(ql, sQl + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < C / 16; ++np) {
          std::uint32_t kh[4];
          const int off = (np * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKP + kk * 16 + ((lane / 8) % 2) * 8;
          ldmatrix_x4(kh, sKh + off);
          mma_bf16(A[2 * np], qh, kh[0], kh[1]);
          mma_bf16(A[2 * np + 1], qh, kh[2], kh[3]);
          if constexpr (kSplit) {
            std::uint32_t kl[4];
            ldmatrix_x4(kl, sKl + off);
            mma_bf16(A[2 * np], ql, kh[0], kh[1]);
            mma_bf16(A[2 * np + 1], ql, kh[2], kh[3]);
            mma_bf16(A[2 * np], qh, kl[0], kl[1]);
            mma_bf16(A[2 * np + 1], qh, kl[2], kl[3]);
          }
        }
      }
      // Causal decay mask, as a select: nothing above the diagonal survives, NaN or not.
#pragma unroll
      for (int j = 0; j < Tr::kCTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = r0 + lane / 4 + (e >= 2 ? 8 : 0), col = j * 8 + 2 * (lane % 4) + (e & 1);
          A[j][e] = col <= row ? (decayed ? A[j][e] * pw[row - col] : A[j][e]) : 0.f;
        }
      float O[Tr::kVTiles][4];
#pragma unroll
      for (int j = 0; j < Tr::kVTiles; ++j) O[j][0] = O[j][1] = O[j][2] = O[j][3] = 0.f;
      if (!state_zero) {
#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk) {
          std::uint32_t qh[4], ql[4];
          ldmatrix_x4(qh, sQh + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
          if constexpr (kSplit) ldmatrix_x4(ql, sQl + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
#pragma unroll
          for (int np = 0; np < VB / 16; ++np) {
            std::uint32_t sh[4], sl[4];
            const int off = (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + np * 16 + (lane / 16) * 8;
            ldmatrix_x4_trans(sh, sSh + off);
            ldmatrix_x4_trans(sl, sSl + off);
            mma_bf16(O[2 * np], qh, sh[0], sh[1]);
            mma_bf16(O[2 * np + 1], qh, sh[2], sh[3]);
            mma_bf16(O[2 * np], qh, sl[0], sl[1]);
            mma_bf16(O[2 * np + 1], qh, sl[2], sl[3]);
            if constexpr (kSplit) {
              mma_bf16(O[2 * np], ql, sh[0], sh[1]);
              mma_bf16(O[2 * np + 1], ql, sh[2], sh[3]);
            }
          }
        }
        if (decayed)
#pragma unroll
          for (int j = 0; j < Tr::kVTiles; ++j) {
            const float top = pw[r0 + lane / 4 + 1], bottom = pw[r0 + lane / 4 + 9];
            O[j][0] *= top, O[j][1] *= top, O[j][2] *= bottom, O[j][3] *= bottom;
          }
      }
      // O += P V, with P (this warp's 16 x C scores) straight from the accumulators as hi/lo.
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk) {
        std::uint32_t ph[4], pl[4];
        split_pack_bf16(A[2 * kk][0], A[2 * kk][1], ph[0], pl[0]);
        split_pack_bf16(A[2 * kk][2], A[2 * kk][3], ph[1], pl[1]);
        split_pack_bf16(A[2 * kk + 1][0], A[2 * kk + 1][1], ph[2], pl[2]);
        split_pack_bf16(A[2 * kk + 1][2], A[2 * kk + 1][3], ph[3], pl[3]);
#pragma unroll
        for (int np = 0; np < VB / 16; ++np) {
          std::uint32_t vh[4];
          const int off = (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + np * 16 + (lane / 16) * 8;
          ldmatrix_x4_trans(vh, sVh + off);
          mma_bf16(O[2 * np], ph, vh[0], vh[1]);
          mma_bf16(O[2 * np + 1], ph, vh[2], vh[3]);
          mma_bf16(O[2 * np], pl, vh[0], vh[1]);
          mma_bf16(O[2 * np + 1], pl, vh[2], vh[3]);
          if constexpr (kSplit) {
            std::uint32_t vl[4];
            ldmatrix_x4_trans(vl, sVl + off);
            mma_bf16(O[2 * np], ph, vl[0], vl[1]);
            mma_bf16(O[2 * np + 1], ph, vl[2], vl[3]);
          }
        }
      }
      // Store this warp's rows (pairs of columns).
#pragma unroll
      for (int j = 0; j < Tr::kVTiles; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = r0 + lane / 4 + half * 8, col = c0 + j * 8 + 2 * (lane % 4);
          if (row >= c || col >= V) continue;
          T* dst = o + it.batch * p.so.s0 + (tg + row) * p.so.s1 + static_cast<std::int64_t>(h) * p.so.s2 + col * p.so.s3;
          const float x0 = p.scale * O[j][2 * half], x1 = p.scale * O[j][2 * half + 1];
          if (col + 1 < V && p.vectorized && sizeof(T) == 2) {
            if constexpr (std::is_same_v<T, __nv_bfloat16>)
              *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(x0, x1);
            else if constexpr (std::is_same_v<T, __half>)
              *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(x0, x1);
          } else if (col + 1 < V && p.vectorized && sizeof(T) == 4) {
            *reinterpret_cast<float2*>(dst) = make_float2(x0, x1);
          } else {
            dst[0] = from_float<T>(x0);
            if (col + 1 < V) dst[p.so.s3] = from_float<T>(x1);
          }
        }
    }

    // ---- State update: S = lambda^c S + W^T V with W = diag(lambda^(c-1-j)) K (as hi/lo). ----
    __syncthreads();  // sQ (becoming sW) and sS are no longer read
    for (int e = threadIdx.x; e < C * KT; e += blockDim.x) {
      const int j = e / KT, d = e % KT;
      float x = __bfloat162float(sKh[j * Tr::kKP + d]);
      if constexpr (kSplit) x += __bfloat162float(sKl[j * Tr::kKP + d]);
      const float w = j < c ? pw[c - 1 - j] : 0.f;
      __nv_bfloat16 wh, wl;
      split_bf16(w * x, wh, wl);
      sWh[j * Tr::kKP + d] = wh;
      sWl[j * Tr::kKP + d] = wl;
    }
    __syncthreads();
    if (decayed) {
      const float lc = pw[c];
#pragma unroll
      for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
        for (int j = 0; j < Tr::kVTiles; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[m][j][e] *= lc;
    }
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) {
      std::uint32_t vh[VB / 16][4], vl[VB / 16][4];
#pragma unroll
      for (int np = 0; np < VB / 16; ++np) {
        const int off = (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + np * 16 + (lane / 16) * 8;
        ldmatrix_x4_trans(vh[np], sVh + off);
        if constexpr (kSplit) ldmatrix_x4_trans(vl[np], sVl + off);
      }
#pragma unroll
      for (int m = 0; m < Tr::kStateMTiles; ++m) {
        std::uint32_t wh[4], wl[4];
        const int off = (kk * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKP + row0 + m * 16 + ((lane / 8) % 2) * 8;
        ldmatrix_x4_trans(wh, sWh + off);
        ldmatrix_x4_trans(wl, sWl + off);
#pragma unroll
        for (int np = 0; np < VB / 16; ++np) {
          mma_bf16(S[m][2 * np], wh, vh[np][0], vh[np][1]);
          mma_bf16(S[m][2 * np + 1], wh, vh[np][2], vh[np][3]);
          mma_bf16(S[m][2 * np], wl, vh[np][0], vh[np][1]);
          mma_bf16(S[m][2 * np + 1], wl, vh[np][2], vh[np][3]);
          if constexpr (kSplit) {
            mma_bf16(S[m][2 * np], wh, vl[np][0], vl[np][1]);
            mma_bf16(S[m][2 * np + 1], wh, vl[np][2], vl[np][3]);
          }
        }
      }
    }
    state_zero = false;
    if (!kDeltaOnly && t + C < it.end) state_to_smem<Tr>(S, sSh, sSl, row0);  // read after the next sync
  }

  if (kDeltaOnly) {
    const Strides4 ws{static_cast<std::int64_t>(p.heads) * K * V, static_cast<std::int64_t>(K) * V, V, 1};
    state_to_global<Tr>(S, p.segment_states, ws, item_index, h, row0, c0, K, V);
  } else if (last_segment && p.final_state) {
    state_to_global<Tr>(S, p.final_state, p.s_final, it.seq, h, row0, c0, K, V);
  }
}

// Segment contributions -> segment start states, in place, one thread per state element:
//   running = initial;  for s < last: running = lambda^len(s) running + delta[s]; buffer[s] = running
// so buffer[s] holds the state before segment s + 1.
// (Kernels are templates so that a header-only library defines them once per program.)
template <int kUnused = 0>
__global__ void lightning_segment_scan_kernel(const __grid_constant__ LightningParams p) {
  const std::int64_t kv = static_cast<std::int64_t>(p.key_dim) * p.value_dim;
  const std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const int h = blockIdx.y;
  const std::int64_t n = blockIdx.z;
  if (e >= kv) return;
  const int r = static_cast<int>(e / p.value_dim), c = static_cast<int>(e % p.value_dim);
  std::int64_t first, count, length;
  if (!p.cu_seqlens) {
    first = n * p.segments_per_seq;
    count = p.segments_per_seq;
    length = p.time;
  } else {
    first = p.segment_offsets[n];
    count = p.segment_offsets[n + 1] - first;
    length = cu_offset(p, n + 1) - cu_offset(p, n);
  }
  float running = p.initial_state ? p.initial_state[n * p.s_initial.s0 + h * p.s_initial.s1 + r * p.s_initial.s2 +
                                                    c * p.s_initial.s3]
                                  : 0.f;
  const double g = p.log_decay[h];
  for (std::int64_t s = 0; s + 1 < count; ++s) {
    const std::int64_t len = (s + 1) * p.segment_len <= length ? p.segment_len : length - s * p.segment_len;
    float* slot = p.segment_states + ((first + s) * p.heads + h) * kv + e;
    running = static_cast<float>(exp(g * len)) * running + *slot;
    *slot = running;
  }
}

// Varlen: segment_offsets[n] = sum over m < n of max(1, ceil(len_m / segment_len)), one block.
template <int kUnused = 0>
__global__ void lightning_segment_offsets_kernel(const __grid_constant__ LightningParams p, std::int64_t* offsets) {
  __shared__ std::int64_t carry;
  __shared__ std::int64_t partial[1024];
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (std::int64_t base = 0; base < p.sequences; base += blockDim.x) {
    const std::int64_t n = base + threadIdx.x;
    std::int64_t count = 0;
    if (n < p.sequences) {
      const std::int64_t len = cu_offset(p, n + 1) - cu_offset(p, n);
      count = len <= 0 ? 1 : (len + p.segment_len - 1) / p.segment_len;
    }
    partial[threadIdx.x] = count;
    __syncthreads();
    for (int d = 1; d < static_cast<int>(blockDim.x); d *= 2) {  // Hillis-Steele inclusive scan
      const std::int64_t add = threadIdx.x >= static_cast<unsigned>(d) ? partial[threadIdx.x - d] : 0;
      __syncthreads();
      partial[threadIdx.x] += add;
      __syncthreads();
    }
    if (n < p.sequences) offsets[n] = carry + partial[threadIdx.x] - count;
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) carry += partial[threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.x == 0) offsets[p.sequences] = carry;
}

// Decode: per (sequence, head), state [K, V] += and out = scale * S^T q, token by token. Each
// thread owns 4 value columns of a band of rows; the state is read and written once per call.
template <class T>
__global__ void __launch_bounds__(256) lightning_step_kernel(const __grid_constant__ StepParams p) {
  constexpr int kTokens = 4;  // tokens applied per pass over the state
  const std::int64_t b = blockIdx.x / p.heads;
  const int h = blockIdx.x % p.heads;
  const int groups = (p.value_dim + 3) / 4;        // column groups of 4
  const int bands = blockDim.x / groups;           // row bands
  const int group = threadIdx.x % groups, band = threadIdx.x / groups;
  __shared__ float partial[256][kTokens][4];
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* o = static_cast<T*>(p.o);
  const float lambda = p.decay[h];
  for (std::int64_t t0 = 0; t0 < p.tokens; t0 += kTokens) {
    const int nt = static_cast<int>(p.tokens - t0 < kTokens ? p.tokens - t0 : kTokens);
    float vv[kTokens][4], acc[kTokens][4];
#pragma unroll
    for (int t = 0; t < kTokens; ++t)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int col = group * 4 + i;
        vv[t][i] = (t < nt && col < p.value_dim && band < bands)
                       ? to_float(v[b * p.sv.s0 + (t0 + t) * p.sv.s1 + h * p.sv.s2 + col * p.sv.s3])
                       : 0.f;
        acc[t][i] = 0.f;
      }
    if (band < bands) {
      for (int r = band; r < p.key_dim; r += bands) {
        float* row = p.state + b * p.ss.s0 + h * p.ss.s1 + r * p.ss.s2 + group * 4 * p.ss.s3;
        float s[4];
        const bool full = p.state_vectorized && group * 4 + 3 < p.value_dim;
        if (full) {
          const float4 x = *reinterpret_cast<const float4*>(row);
          s[0] = x.x, s[1] = x.y, s[2] = x.z, s[3] = x.w;
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) s[i] = group * 4 + i < p.value_dim ? row[i * p.ss.s3] : 0.f;
        }
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          if (t >= nt) break;
          const float kr = to_float(k[b * p.sk.s0 + (t0 + t) * p.sk.s1 + h * p.sk.s2 + r * p.sk.s3]);
          const float qr = to_float(q[b * p.sq.s0 + (t0 + t) * p.sq.s1 + h * p.sq.s2 + r * p.sq.s3]);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            s[i] = lambda * s[i] + kr * vv[t][i];
            acc[t][i] += qr * s[i];
          }
        }
        if (full) {
          *reinterpret_cast<float4*>(row) = make_float4(s[0], s[1], s[2], s[3]);
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if (group * 4 + i < p.value_dim) row[i * p.ss.s3] = s[i];
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t)
#pragma unroll
      for (int i = 0; i < 4; ++i) partial[threadIdx.x][t][i] = acc[t][i];
    __syncthreads();
    if (band == 0) {
      for (int t = 0; t < nt; ++t)
        for (int i = 0; i < 4; ++i) {
          const int col = group * 4 + i;
          if (col >= p.value_dim) continue;
          float sum = 0.f;
          for (int bb = 0; bb < bands; ++bb) sum += partial[bb * groups + group][t][i];
          o[b * p.so.s0 + (t0 + t) * p.so.s1 + h * p.so.s2 + col * p.so.s3] = from_float<T>(p.scale * sum);
        }
    }
    __syncthreads();
  }
}

}  // namespace lcsm::cuda::detail
