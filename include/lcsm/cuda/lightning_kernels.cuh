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

// Tile shapes for head dimension K <= KT, value columns per CTA VT, element type T, and whether
// the state and decayed keys keep a lo bf16 term (kExact).
template <class T, int KT, int VT, bool kExact>
struct LightningTraits {
  static constexpr int kKeyTile = KT;
  static constexpr int kValueBlock = VT;
  static constexpr int kChunk = KT > 128 ? 32 : 64;  // tokens per chunk
  static constexpr int kWarps = KT > 128 ? 8 : 16;   // 4 per scheduler: latency hiding for mma.sync
  static constexpr int kThreads = kWarps * 32;
  static constexpr bool kSplitInputs = !std::is_same_v<T, __nv_bfloat16>;  // inputs not exact in bf16
  static constexpr bool kExactState = kExact;
  // Double-buffered loads (cp.async of the next chunk during this one) where shared memory allows.
  static constexpr int kStages = (!kSplitInputs && KT <= 128) ? 2 : 1;
  static constexpr int kKP = KT + 8, kVP = VT + 8, kPP = kChunk + 8;  // padded rows: no ldmatrix conflicts
  // Score / output partition: 4 row blocks of 16 tokens x 2 column halves (kChunk = 64), or
  // 2 x 4 (kChunk = 32).
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

  // Shared memory in bf16 elements.
  static constexpr int kQ = kChunk * kKP, kV = kChunk * kVP, kS = KT * kVP, kP = kChunk * kPP;
  static constexpr int kStage = (kSplitInputs ? 2 : 1) * (2 * kQ + kV);  // Q, K, V (hi, lo)
  static constexpr bool kSplitP = kSplitInputs || kExact;                // P keeps a lo term
  static constexpr int kOffStages = 0;
  static constexpr int kOffP = kOffStages + kStages * kStage;
  static constexpr int kOffSh = kOffP + (kSplitP ? 2 : 1) * kP;
  static constexpr int kOffSl = kOffSh + kS;
  // 16-bit outputs are staged in smem and written as whole 16-byte vectors.
  static constexpr bool kStageOutput = sizeof(T) == 2;
  static constexpr int kOffO = kOffSl + (kExact ? kS : 0);
  static constexpr int kElems = kOffO + (kStageOutput ? kChunk * kVP : 0);
  static constexpr int kOffPow = kElems * 2;  // bytes: float table of lambda^p, p = 0..kChunk
  static constexpr int kSmemBytes = kOffPow + (kChunk + 1) * 4;
  static_assert(kSmemBytes <= 227 * 1024, "tile does not fit in shared memory");
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
  const std::int64_t x =
      p.cu_seqlens_int64 ? load_offset<std::int64_t>(p.cu_seqlens, i) : load_offset<std::int32_t>(p.cu_seqlens, i);
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

// The element (row, col) of this warp's state tile (m, j, e), relative to the CTA's block.
template <class Tr>
__device__ __forceinline__ void state_coords(int warp, int lane, int m, int j, int e, int& row, int& col) {
  row = ((warp % Tr::kStateRowWarps) * Tr::kStateMTiles + m) * 16 + lane / 4 + (e >= 2 ? 8 : 0);
  col = ((warp / Tr::kStateRowWarps) * Tr::kStateNTiles + j) * 8 + 2 * (lane % 4) + (e & 1);
}

template <class Tr>
using StateRegs = float[Tr::kStateMTiles][Tr::kStateNTiles][4];

// This warp's state tiles <-> a [K, V] fp32 state slice in global memory (absent: zeros).
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
        acc[m][j][e] = (s && r < K && c < V) ? s[n * st.s0 + h * st.s1 + r * st.s2 + c * st.s3] : 0.f;
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
        if (r < K && c < V) s[n * st.s0 + h * st.s1 + r * st.s2 + c * st.s3] = acc[m][j][e];
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

// Issues the loads of one chunk's q (unless kDeltaOnly), k and v tiles into a stage.
template <class T, class Tr, bool kDeltaOnly>
__device__ __forceinline__ void load_chunk(__nv_bfloat16* stage, const LightningParams& p, const Item& it,
                                           std::int64_t tg, int c, int h, int c0) {
  constexpr bool kSplit = Tr::kSplitInputs;
  constexpr int C = Tr::kChunk, KT = Tr::kKeyTile, VT = Tr::kValueBlock;
  __nv_bfloat16* sQh = stage;
  __nv_bfloat16* sKh = sQh + Tr::kQ;
  __nv_bfloat16* sVh = sKh + Tr::kQ;
  __nv_bfloat16* lo = sVh + Tr::kV;  // lo parts follow when inputs are split
  const std::int64_t h64 = h;
  if (!kDeltaOnly)
    load_tile<T, kSplit, C, KT, Tr::kThreads>(sQh, lo, Tr::kKP,
                                              static_cast<const T*>(p.q) + it.batch * p.sq.s0 + h64 * p.sq.s2, p.sq.s1,
                                              p.sq.s3, tg, c, 0, p.key_dim, p.vectorized);
  load_tile<T, kSplit, C, KT, Tr::kThreads>(sKh, lo + Tr::kQ, Tr::kKP,
                                            static_cast<const T*>(p.k) + it.batch * p.sk.s0 + h64 * p.sk.s2, p.sk.s1,
                                            p.sk.s3, tg, c, 0, p.key_dim, p.vectorized);
  load_tile<T, kSplit, C, VT, Tr::kThreads>(sVh, lo + 2 * Tr::kQ, Tr::kVP,
                                            static_cast<const T*>(p.v) + it.batch * p.sv.s0 + h64 * p.sv.s2, p.sv.s1,
                                            p.sv.s3, tg, c, c0, p.value_dim, p.vectorized);
  asm volatile("cp.async.commit_group;\n" ::);
}

template <class T, int KT, int VT, bool kExact, bool kDeltaOnly>
__global__ void __launch_bounds__(LightningTraits<T, KT, VT, kExact>::kThreads, 1)
    lightning_chunks_kernel(const __grid_constant__ LightningParams p) {
  using Tr = LightningTraits<T, KT, VT, kExact>;
  constexpr int C = Tr::kChunk;
  constexpr bool kSplit = Tr::kSplitInputs;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sPh = smem + Tr::kOffP;
  __nv_bfloat16* sPl = sPh + Tr::kP;  // only when P keeps a lo term
  __nv_bfloat16* sSh = smem + Tr::kOffSh;
  __nv_bfloat16* sSl = smem + Tr::kOffSl;  // only when exact
  float* pw = reinterpret_cast<float*>(smem_raw + Tr::kOffPow);

  const int vb = blockIdx.x % p.value_blocks;
  const int h = (blockIdx.x / p.value_blocks) % p.heads;
  const std::int64_t item_index = blockIdx.x / (static_cast<std::int64_t>(p.value_blocks) * p.heads);
  Item it;
  if (!decode_item(p, item_index, it)) return;
  const bool last_segment = it.segment + 1 >= it.segments;
  if (kDeltaOnly && last_segment) return;  // the last segment's contribution is never needed

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int K = p.key_dim, V = p.value_dim, c0 = vb * VT;
  const double g = p.log_decay[h];
  const bool decayed = g != 0.0;
  for (int i = threadIdx.x; i <= C; i += blockDim.x) pw[i] = static_cast<float>(exp(g * i));

  StateRegs<Tr> S;
  bool state_zero = true;
  const Strides4 ws{static_cast<std::int64_t>(p.heads) * K * V, static_cast<std::int64_t>(K) * V, V, 1};
  if (!kDeltaOnly && p.segment_states) {  // cut sequences: every segment starts from the scanned state
    state_from_global<Tr>(S, p.segment_states, ws, item_index, h, c0, K, V);
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
  const int r0 = rw * 16;
  int stage = 0;
  if (it.begin < it.end) {
    const std::int64_t c = it.end - it.begin < C ? it.end - it.begin : C;
    load_chunk<T, Tr, kDeltaOnly>(smem + Tr::kOffStages, p, it, it.start + it.begin, static_cast<int>(c), h, c0);
  }

  for (std::int64_t t = it.begin; t < it.end; t += C) {
    const int c = static_cast<int>(it.end - t < C ? it.end - t : C);
    const std::int64_t tg = it.start + t;  // first token of the chunk in the batch row
    __nv_bfloat16* cur = smem + Tr::kOffStages + stage * Tr::kStage;
    __nv_bfloat16 *sQh = cur, *sKh = cur + Tr::kQ, *sVh = cur + 2 * Tr::kQ;
    __nv_bfloat16 *sQl = sVh + Tr::kV, *sKl = sQl + Tr::kQ, *sVl = sKl + Tr::kQ;
    // This chunk's loads are the oldest in flight; with two stages, start the next chunk's now.
    if constexpr (Tr::kStages == 2) {
      if (t + C < it.end) {
        const std::int64_t cn = it.end - t - C < C ? it.end - t - C : C;
        load_chunk<T, Tr, kDeltaOnly>(smem + Tr::kOffStages + (stage ^ 1) * Tr::kStage, p, it, tg + C,
                                      static_cast<int>(cn), h, c0);
        asm volatile("cp.async.wait_group 1;\n" ::);
      } else {
        asm volatile("cp.async.wait_group 0;\n" ::);
      }
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();  // chunk data (and the state operand) visible to all

    if (!kDeltaOnly && cw < Tr::kScoreColWarps) {
      // ---- Scores of rows [r0, r0 + 16) x this warp's columns, decay mask, P to smem. ----
      float A[Tr::kScoreTiles][4];
#pragma unroll
      for (int j = 0; j < Tr::kScoreTiles; ++j) A[j][0] = A[j][1] = A[j][2] = A[j][3] = 0.f;
      const int n0 = cw * Tr::kScoreTiles * 8;
#pragma unroll
      for (int kk = 0; kk < KT / 16; ++kk) {
        std::uint32_t qh[4], ql[4];
        ldmatrix_x4(qh, sQh + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
        if constexpr (kSplit) ldmatrix_x4(ql, sQl + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < Tr::kScoreTiles / 2; ++np) {
          std::uint32_t kh[4];
          const int off = (n0 + np * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKP + kk * 16 + ((lane / 8) % 2) * 8;
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
      // Causal decay mask as a select; then P (bf16 hi, and lo for split inputs) to smem.
#pragma unroll
      for (int j = 0; j < Tr::kScoreTiles; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = r0 + lane / 4 + half * 8, col = n0 + j * 8 + 2 * (lane % 4);
          float x0 = A[j][2 * half], x1 = A[j][2 * half + 1];
          x0 = col <= row ? (decayed ? x0 * pw[row - col] : x0) : 0.f;
          x1 = col + 1 <= row ? (decayed ? x1 * pw[row - col - 1] : x1) : 0.f;
          std::uint32_t h32, l32;
          split_pack_bf16(x0, x1, h32, l32);
          *reinterpret_cast<std::uint32_t*>(sPh + row * Tr::kPP + col) = h32;
          if constexpr (Tr::kSplitP) *reinterpret_cast<std::uint32_t*>(sPl + row * Tr::kPP + col) = l32;
        }
    }
    __syncthreads();  // P complete

    if (!kDeltaOnly) {
      // ---- O = lambda^(i+1) Q S + P V for rows [r0, r0 + 16) x this warp's output columns. ----
      float O[Tr::kOutTiles][4];
#pragma unroll
      for (int j = 0; j < Tr::kOutTiles; ++j) O[j][0] = O[j][1] = O[j][2] = O[j][3] = 0.f;
      const int v0 = cw * Tr::kOutTiles * 8;
      if (!state_zero) {
#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk) {
          std::uint32_t qh[4], ql[4];
          ldmatrix_x4(qh, sQh + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
          if constexpr (kSplit) ldmatrix_x4(ql, sQl + (r0 + lane % 16) * Tr::kKP + kk * 16 + (lane / 16) * 8);
#pragma unroll
          for (int np = 0; np < Tr::kOutTiles / 2; ++np) {
            std::uint32_t sh[4];
            const int off = (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + v0 + np * 16 + (lane / 16) * 8;
            ldmatrix_x4_trans(sh, sSh + off);
            mma_bf16(O[2 * np], qh, sh[0], sh[1]);
            mma_bf16(O[2 * np + 1], qh, sh[2], sh[3]);
            if constexpr (Tr::kExactState) {
              std::uint32_t sl[4];
              ldmatrix_x4_trans(sl, sSl + off);
              mma_bf16(O[2 * np], qh, sl[0], sl[1]);
              mma_bf16(O[2 * np + 1], qh, sl[2], sl[3]);
            }
            if constexpr (kSplit) {
              mma_bf16(O[2 * np], ql, sh[0], sh[1]);
              mma_bf16(O[2 * np + 1], ql, sh[2], sh[3]);
            }
          }
        }
        if (decayed) {
          const float top = pw[r0 + lane / 4 + 1], bottom = pw[r0 + lane / 4 + 9];
#pragma unroll
          for (int j = 0; j < Tr::kOutTiles; ++j) O[j][0] *= top, O[j][1] *= top, O[j][2] *= bottom, O[j][3] *= bottom;
        }
      }
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk) {
        std::uint32_t ph[4], pl[4];
        ldmatrix_x4(ph, sPh + (r0 + lane % 16) * Tr::kPP + kk * 16 + (lane / 16) * 8);
        if constexpr (Tr::kSplitP) ldmatrix_x4(pl, sPl + (r0 + lane % 16) * Tr::kPP + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < Tr::kOutTiles / 2; ++np) {
          std::uint32_t vh[4];
          const int off = (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + v0 + np * 16 + (lane / 16) * 8;
          ldmatrix_x4_trans(vh, sVh + off);
          mma_bf16(O[2 * np], ph, vh[0], vh[1]);
          mma_bf16(O[2 * np + 1], ph, vh[2], vh[3]);
          if constexpr (Tr::kSplitP) {
            mma_bf16(O[2 * np], pl, vh[0], vh[1]);
            mma_bf16(O[2 * np + 1], pl, vh[2], vh[3]);
          }
          if constexpr (kSplit) {
            std::uint32_t vl[4];
            ldmatrix_x4_trans(vl, sVl + off);
            mma_bf16(O[2 * np], ph, vl[0], vl[1]);
            mma_bf16(O[2 * np + 1], ph, vl[2], vl[3]);
          }
        }
      }
#pragma unroll
      for (int j = 0; j < Tr::kOutTiles; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = r0 + lane / 4 + half * 8, lcol = v0 + j * 8 + 2 * (lane % 4), col = c0 + lcol;
          const float x0 = p.scale * O[j][2 * half], x1 = p.scale * O[j][2 * half + 1];
          if constexpr (Tr::kStageOutput) {  // written out after the update's barrier
            T* so = reinterpret_cast<T*>(smem + Tr::kOffO) + row * Tr::kVP + lcol;
            so[0] = from_float<T>(x0);
            so[1] = from_float<T>(x1);
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

    // ---- S = lambda^c S + W^T V, W = diag(lambda^(c-1-j)) K: the decay is applied to the key
    // fragments in registers and split into bf16 hi (+ lo when exact) right before the MMAs. ----
    if (decayed) {
      const float lc = pw[c];
#pragma unroll
      for (int m = 0; m < Tr::kStateMTiles; ++m)
#pragma unroll
        for (int j = 0; j < Tr::kStateNTiles; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[m][j][e] *= lc;
    }
    {
      const int srow0 = (warp % Tr::kStateRowWarps) * Tr::kStateMTiles * 16;
      const int scol0 = (warp / Tr::kStateRowWarps) * Tr::kStateNTiles * 8;
      constexpr bool kLo = kExact || kSplit;  // W carries a lo term
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk) {
        // Tokens of this lane's fragment elements: a0/a1 hold j0, j0 + 1; a2/a3 hold j0 + 8, j0 + 9.
        const int j0 = kk * 16 + 2 * (lane % 4);
        const float w0 = j0 < c ? pw[c - 1 - j0] : 0.f, w1 = j0 + 1 < c ? pw[c - 2 - j0] : 0.f;
        const float w8 = j0 + 8 < c ? pw[c - 9 - j0] : 0.f, w9 = j0 + 9 < c ? pw[c - 10 - j0] : 0.f;
#pragma unroll
        for (int m = 0; m < Tr::kStateMTiles; ++m) {
          std::uint32_t kh[4], kl[4], wh[4], wl[4];
          const int off = (kk * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKP + srow0 + m * 16 + ((lane / 8) % 2) * 8;
          ldmatrix_x4_trans(kh, sKh + off);
          if constexpr (kSplit) ldmatrix_x4_trans(kl, sKl + off);
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&kh[r]));
            if constexpr (kSplit) {
              const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&kl[r]));
              x.x += y.x, x.y += y.y;
            }
            const float wa = r < 2 ? w0 : w8, wb = r < 2 ? w1 : w9;
            split_pack_bf16(wa * x.x, wb * x.y, wh[r], wl[r]);
          }
#pragma unroll
          for (int np = 0; np < Tr::kStateNTiles / 2; ++np) {
            std::uint32_t vh[4];
            const int voff = (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVP + scol0 + np * 16 + (lane / 16) * 8;
            ldmatrix_x4_trans(vh, sVh + voff);
            mma_bf16(S[m][2 * np], wh, vh[0], vh[1]);
            mma_bf16(S[m][2 * np + 1], wh, vh[2], vh[3]);
            if constexpr (kLo) {
              mma_bf16(S[m][2 * np], wl, vh[0], vh[1]);
              mma_bf16(S[m][2 * np + 1], wl, vh[2], vh[3]);
            }
            if constexpr (kSplit) {
              std::uint32_t vl[4];
              ldmatrix_x4_trans(vl, sVl + voff);
              mma_bf16(S[m][2 * np], wh, vl[0], vl[1]);
              mma_bf16(S[m][2 * np + 1], wh, vl[2], vl[3]);
            }
          }
        }
      }
    }
    __syncthreads();  // every warp is done reading this chunk's state operand and stage
    if constexpr (Tr::kStageOutput) {
      if (!kDeltaOnly) {  // the staged outputs of this chunk, as 16-byte row segments
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
    } else {
      if (t + C < it.end) {
        const std::int64_t cn = it.end - t - C < C ? it.end - t - C : C;
        load_chunk<T, Tr, kDeltaOnly>(smem + Tr::kOffStages, p, it, tg + C, static_cast<int>(cn), h, c0);
      }
    }
  }

  if (kDeltaOnly) {
    state_to_global<Tr>(S, p.segment_states, ws, item_index + 1, h, c0, K, V);  // delta of segment s
  } else if (last_segment && p.final_state) {
    state_to_global<Tr>(S, p.final_state, p.s_final, it.seq, h, c0, K, V);
  }
}

// Segment contributions -> segment start states, in place, one thread per state element. Slot
// first + s holds the contribution of segment s - 1 on entry and the state before segment s on exit:
//   slot[first] = initial;  slot[first + s + 1] = lambda^len(s) slot[first + s] + delta(s).
// Only this kernel reads the initial state of a cut sequence, so final_state may alias it.
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
  float running =
      p.initial_state
          ? p.initial_state[n * p.s_initial.s0 + h * p.s_initial.s1 + r * p.s_initial.s2 + c * p.s_initial.s3]
          : 0.f;
  p.segment_states[(first * p.heads + h) * kv + e] = running;
  const double g = p.log_decay[h];
  for (std::int64_t s = 0; s + 1 < count; ++s) {
    const std::int64_t len = (s + 1) * p.segment_len <= length ? p.segment_len : length - s * p.segment_len;
    float* slot = p.segment_states + ((first + s + 1) * p.heads + h) * kv + e;
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

// Decode: one CTA per (sequence, head); for each token, S = lambda S + k v^T and o = scale * S^T q.
// Memory-bound on the state (read and written once per group of tokens), so the design is about
// bytes in flight: a thread owns 4 value columns (one float4) of every `bands`-th row, and issues
// the loads of all its rows of a batch (kStepRows of them, 64 KB per CTA for a 128 x 128 state)
// before it uses any. The group's q, k, v are staged in shared memory first (as float; every lane
// of a warp reads the same row element: a broadcast), and the per-band partial outputs are summed
// with shared-memory atomics. Tokens are taken in groups of p.token_group (sized so the staging
// fits), each group one pass over the state.
constexpr int kStepThreads = 256;
constexpr int kStepRows = 16;  // rows per thread per batch: 16 float4 = 256 bytes in flight each

template <class T>
__global__ void __launch_bounds__(kStepThreads) lightning_step_kernel(const __grid_constant__ StepParams p) {
  extern __shared__ float step_smem[];
  const int K = p.key_dim, V = p.value_dim, G = p.token_group;
  float* sq = step_smem;   // [G][K]  q * scale
  float* sk = sq + G * K;  // [G][K]
  float* sv = sk + G * K;  // [G][V]
  float* so = sv + G * V;  // [G][V]  output sums
  const std::int64_t b = blockIdx.x / p.heads;
  const int h = blockIdx.x % p.heads;
  const int groups = (V + 3) / 4;           // float4 column groups
  const int bands = kStepThreads / groups;  // rows processed side by side
  const int group = threadIdx.x % groups, band = threadIdx.x / groups;
  const bool active = band < bands;
  const int c0 = group * 4;
  const bool full = p.state_vectorized && c0 + 3 < V;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* o = static_cast<T*>(p.o);
  const float lambda = p.decay[h];
  float* state = p.state + b * p.ss.s0 + h * p.ss.s1;

  for (std::int64_t t0 = 0; t0 < p.tokens; t0 += G) {
    const int nt = static_cast<int>(p.tokens - t0 < G ? p.tokens - t0 : G);
    for (int i = threadIdx.x; i < nt * K; i += kStepThreads) {
      const std::int64_t t = t0 + i / K;
      const int r = i % K;
      sq[i] = p.scale * to_float(q[b * p.sq.s0 + t * p.sq.s1 + h * p.sq.s2 + r * p.sq.s3]);
      sk[i] = to_float(k[b * p.sk.s0 + t * p.sk.s1 + h * p.sk.s2 + r * p.sk.s3]);
    }
    for (int i = threadIdx.x; i < nt * V; i += kStepThreads) {
      const std::int64_t t = t0 + i / V;
      const int c = i % V;
      sv[i] = to_float(v[b * p.sv.s0 + t * p.sv.s1 + h * p.sv.s2 + c * p.sv.s3]);
      so[i] = 0.f;
    }
    __syncthreads();
    if (active) {
      for (int r0 = band; r0 < K; r0 += kStepRows * bands) {
        float s[kStepRows][4];
#pragma unroll
        for (int i = 0; i < kStepRows; ++i) {  // every load of the batch in flight first
          const int r = r0 + i * bands;
          const float* row = state + r * p.ss.s2 + c0 * p.ss.s3;
          if (r < K && full) {
            const float4 x = *reinterpret_cast<const float4*>(row);
            s[i][0] = x.x, s[i][1] = x.y, s[i][2] = x.z, s[i][3] = x.w;
          } else {
#pragma unroll
            for (int c = 0; c < 4; ++c) s[i][c] = r < K && c0 + c < V ? row[c * p.ss.s3] : 0.f;
          }
        }
        for (int t = 0; t < nt; ++t) {
          float vv[4], acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int c = 0; c < 4; ++c) vv[c] = c0 + c < V ? sv[t * V + c0 + c] : 0.f;
#pragma unroll
          for (int i = 0; i < kStepRows; ++i) {
            const int r = r0 + i * bands;
            const float kr = r < K ? sk[t * K + r] : 0.f, qr = r < K ? sq[t * K + r] : 0.f;
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              s[i][c] = lambda * s[i][c] + kr * vv[c];
              acc[c] += qr * s[i][c];
            }
          }
#pragma unroll
          for (int c = 0; c < 4; ++c)
            if (c0 + c < V) atomicAdd(&so[t * V + c0 + c], acc[c]);
        }
#pragma unroll
        for (int i = 0; i < kStepRows; ++i) {
          const int r = r0 + i * bands;
          if (r >= K) break;
          float* row = state + r * p.ss.s2 + c0 * p.ss.s3;
          if (full) {
            *reinterpret_cast<float4*>(row) = make_float4(s[i][0], s[i][1], s[i][2], s[i][3]);
          } else {
#pragma unroll
            for (int c = 0; c < 4; ++c)
              if (c0 + c < V) row[c * p.ss.s3] = s[i][c];
          }
        }
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nt * V; i += kStepThreads) {
      const std::int64_t t = t0 + i / V;
      const int c = i % V;
      o[b * p.so.s0 + t * p.so.s1 + h * p.so.s2 + c * p.so.s3] = from_float<T>(so[i]);
    }
    __syncthreads();  // the staging is reused by the next group
  }
}

}  // namespace lcsm::cuda::detail
