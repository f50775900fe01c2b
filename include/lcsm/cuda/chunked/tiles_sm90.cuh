// The sm_90a forward's tiles (chunked/fwd_sm90.cuh): the 128-byte-swizzle layout of a stage's q, k,
// v tiles and the wgmma descriptors over it, the producer warpgroup's loads of a chunk into a ring
// stage (TMA tensor copies for whole chunks, cp.async otherwise), and the state's transposed
// accumulator to and from global memory. Tr: the kernel's traits (Sm90Traits).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/barrier_sm90.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/tma_sm90.cuh"
#include "lcsm/cuda/primitives/wgmma_sm90.cuh"

// LCSM_CUDA_SM90_TMA=0 loads every chunk by cp.async (for comparison runs; docs/building.md).
#ifndef LCSM_CUDA_SM90_TMA
#define LCSM_CUDA_SM90_TMA 1
#endif

namespace lcsm::cuda::detail {

// The stage tiles' layout, FlashAttention-3's: a kRows x kCols tile is kCols / 64 column halves of
// kRows x 64, each row 128 bytes, its 16-byte group (c / 8) % 8 stored at position XOR r % 8. A TMA
// box of 64 x 64 with the 128-byte swizzle writes a half as it is; a 1 KB-aligned tile keeps the
// pattern's phase (it comes from the address). Measured against the blocked layout of 8 x 8 core
// matrices, which only 16-byte box rows or 16-byte cp.async scattered over 8 rows can fill: the
// loads alone ran at 60% of the copy bandwidth, swizzled at 96-106% (docs/decisions.md).
template <int kRows>
__device__ __forceinline__ int tile_offset(int r, int c) {
  return (c >> 6) * kRows * 64 + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
}

// A stage tile as a wgmma operand, k16 step kk. K-major: rows are M or N, columns the reduction
// (16 columns = 32 bytes further a step, the next column half after four). MN-major: rows are the
// reduction, columns c0.. (a multiple of 64) the M or N dimension; when N > 64 the next 64 columns
// lie one column half further (the leading byte offset).
template <int kRows>
__device__ __forceinline__ std::uint64_t tile_k_major(const __nv_bfloat16* tile, int kk) {
  return wgmma_descriptor_sw128(tile + (kk >> 2) * kRows * 64 + (kk & 3) * 16, 16, 1024);
}
template <int kRows>
__device__ __forceinline__ std::uint64_t tile_mn_major(const __nv_bfloat16* tile, int kk, int c0) {
  return wgmma_descriptor_sw128(tile + (c0 >> 6) * kRows * 64 + kk * 16 * 64, kRows * 128, 1024);
}

// Rows [t0, t0 + kRows) x columns [c0, c0 + kCols) of one head into a stage tile by 16-byte
// cp.async; rows >= count and columns >= dim are zero. Consecutive threads fill one row; a
// thread's column group is the same in every pass and its row advances by a multiple of 8, so its
// swizzled offset advances by a constant.
template <int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_swizzled(__nv_bfloat16* tile, const __nv_bfloat16* head, std::int64_t row_stride,
                                              std::int64_t t0, int count, int c0, int dim, int tid) {
  constexpr int kColBlocks = kCols / 8, kPasses = kRows * kColBlocks / kThreads, kRowStep = kThreads / kColBlocks;
  static_assert(kRowStep % 8 == 0, "a thread's rows keep their swizzle phase");
  const int cb = tid % kColBlocks, r0 = tid / kColBlocks, col = c0 + cb * 8;
  __nv_bfloat16* dst = tile + tile_offset<kRows>(r0, cb * 8);
  const __nv_bfloat16* src = head + (t0 + r0) * row_stride + col;
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    __nv_bfloat16* d = dst + i * kRowStep * 64;
    if (r0 + i * kRowStep < count && col < dim) cp_async_16(d, src + i * kRowStep * row_stride);
    else *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
  }
}

// Where the vector gate's gate (t, k) lies in a stage, as a float index from the lo tiles' start:
// the four gates of keys 8j..8j+3 of row t where Q~'s lo tile keeps its 16-byte group (t, 8j), those
// of keys 8j+4..8j+7 where K^'s does (chunked/key_gate_sm90.cuh transforms them in place).
template <class Tr>
__device__ __forceinline__ int key_gate_word(int t, int k) {
  return ((k >> 2) & 1) * (Tr::kLoTile / 2) + tile_offset<Tr::kChunk>(t, k & ~7) / 2 + (k & 3);
}

// The vector gate's gates of one chunk (rows >= c zero) by 16-byte cp.async, by the producer's threads.
template <class Tr>
__device__ __forceinline__ void load_key_gates(__nv_bfloat16* stage, const RecurrenceParams& p, const Item& it,
                                               std::int64_t tg, int c, int h, int tid) {
  float* gates = reinterpret_cast<float*>(stage + Tr::kLoTiles);
  const float* head = p.log_gate + it.batch * p.sg.s0 + static_cast<std::int64_t>(h) * p.sg.s2;
  constexpr int kQuads = Tr::kKeys / 4;
  static_assert(Tr::kChunk * kQuads % Tr::kProducerThreads == 0, "whole passes");
#pragma unroll 1
  for (int i = tid; i < Tr::kChunk * kQuads; i += Tr::kProducerThreads) {
    const int r = i / kQuads, k = (i % kQuads) * 4;
    float* dst = gates + key_gate_word<Tr>(r, k);
    if (r < c) cp_async_16(dst, head + (tg + r) * p.sg.s1 + k);
    else *reinterpret_cast<float4*>(dst) = make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

// The chunk's gates after the stage's tiles: the scalar gate's log-gates (rows >= c zero), or the
// vector gate's (load_key_gates).
template <class Tr>
__device__ __forceinline__ void load_chunk_gates(__nv_bfloat16* stage, const RecurrenceParams& p, const Item& it,
                                                 std::int64_t tg, int c, int h, int tid) {
  if constexpr (Tr::kKeyGate) {
    load_key_gates<Tr>(stage, p, it, tg, c, h, tid);
  } else if constexpr (Tr::kTokenGate) {
    float* gates = reinterpret_cast<float*>(stage + Tr::kStageTiles);
    for (int r = tid; r < Tr::kChunk; r += Tr::kProducerThreads) {
      if (r < c) load_token_gate(gates + r, p, it.batch, it.start, tg + r, h);
      else gates[r] = 0.f;
    }
  }
}

// The producer's loads of one chunk into a stage (q unless kDeltaOnly, k, v, the gates), by its
// kProducerThreads threads (tid < kProducerThreads).
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void load_wgmma_chunk(__nv_bfloat16* stage, const RecurrenceParams& p, const Item& it,
                                                 std::int64_t tg, int c, int h, int c0, int tid) {
  constexpr int kT = Tr::kProducerThreads;
  const std::int64_t h64 = h;
  const auto* q = static_cast<const __nv_bfloat16*>(p.q) + it.batch * p.sq.s0 + h64 * p.sq.s2;
  const auto* k = static_cast<const __nv_bfloat16*>(p.k) + it.batch * p.sk.s0 + h64 * p.sk.s2;
  const auto* v = static_cast<const __nv_bfloat16*>(p.v) + it.batch * p.sv.s0 + h64 * p.sv.s2;
  if (!kDeltaOnly) load_swizzled<Tr::kChunk, Tr::kKeys, kT>(stage, q, p.sq.s1, tg, c, 0, p.key_dim, tid);
  load_swizzled<Tr::kChunk, Tr::kKeys, kT>(stage + Tr::kQ, k, p.sk.s1, tg, c, 0, p.key_dim, tid);
  load_swizzled<Tr::kChunk, Tr::kValueTile, kT>(stage + Tr::kQ + Tr::kK, v, p.sv.s1, tg, c, c0, p.value_dim, tid);
  load_chunk_gates<Tr>(stage, p, it, tg, c, h, tid);
}

// Accumulator element i of a thread: row and column inside the warpgroup's m64nN tile.
__device__ __forceinline__ int acc_row(int i) {
  return static_cast<int>(threadIdx.x / 32 % 4) * 16 + static_cast<int>(threadIdx.x % 32) / 4 + ((i >> 1) & 1) * 8;
}
__device__ __forceinline__ int acc_col(int i) {
  return (i >> 2) * 8 + 2 * (static_cast<int>(threadIdx.x) % 4) + (i & 1);
}

// The state S^T (value rows, key columns) <-> global [K, V] fp32 (absent: zero).
__device__ __forceinline__ void state_t_from_global(float (&s)[64], const float* g, const Strides4& st, std::int64_t n,
                                                    int h, int c0, int K, int V) {
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int v = c0 + acc_row(i), d = acc_col(i);
    s[i] = (g && v < V && d < K) ? g[n * st.s0 + h * st.s1 + d * st.s2 + v * st.s3] : 0.f;
  }
}
__device__ __forceinline__ void state_t_to_global(const float (&s)[64], float* g, const Strides4& st, std::int64_t n,
                                                  int h, int c0, int K, int V) {
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int v = c0 + acc_row(i), d = acc_col(i);
    if (v < V && d < K) g[n * st.s0 + h * st.s1 + d * st.s2 + v * st.s3] = s[i];
  }
}

// q, k and v as TMA tensor maps that write the stage tiles directly: three dimensions (column over
// all heads, row, batch) and a box of 64 columns x 64 rows with the 128-byte swizzle (one copy a
// column half). Made on the host per launch; `valid` is false when the shapes or the driver do not
// allow it (the producer then copies by cp.async).
struct TileMaps {
  CUtensorMap q, k, v;
  int valid;
};

inline bool tile_map(CUtensorMap& map, const void* base, const Strides4& s, std::int64_t batch, std::int64_t time,
                     int heads, int width) {
  if (s.s3 != 1 || s.s1 <= 0 || s.s1 % 8 || s.s2 < 0 || s.s2 % 8 || (batch > 1 && (s.s0 <= 0 || s.s0 % 8)) ||
      reinterpret_cast<std::uintptr_t>(base) % 16 || time < 64)  // no whole chunk
    return false;
  const std::uint64_t columns = static_cast<std::uint64_t>(heads - 1) * s.s2 + width;
  if (columns >= (std::uint64_t{1} << 31)) return false;  // tma_tile's column coordinate is an int
  const std::uint64_t row = static_cast<std::uint64_t>(s.s1) * 2;
  const std::uint64_t batch_stride = batch > 1 ? static_cast<std::uint64_t>(s.s0) * 2 : time * row;
  const std::uint64_t extent[3] = {columns, static_cast<std::uint64_t>(time), static_cast<std::uint64_t>(batch)};
  const std::uint64_t stride[2] = {row, batch_stride};
  const std::uint32_t box[3] = {64, 64, 1};
  return encode_bf16_map<3>(map, base, extent, stride, box, CU_TENSOR_MAP_SWIZZLE_128B);
}

// The maps of a launch of the sm_90a kernel (K = 128 and whole value tiles only: TMA has no zero
// columns inside a row).
template <class Tr>
TileMaps make_tile_maps(const RecurrenceParams& p) {
  TileMaps m{};
#if LCSM_CUDA_SM90_TMA
  m.valid = p.key_dim == Tr::kKeys && p.value_dim % Tr::kValueTile == 0 &&
            (Tr::kQ == 0 || tile_map(m.q, p.q, p.sq, p.batch, p.time, p.heads, p.key_dim)) &&
            tile_map(m.k, p.k, p.sk, p.batch, p.time, p.heads, p.key_dim) &&
            tile_map(m.v, p.v, p.sv, p.batch, p.time, p.heads, p.value_dim);
#else
  (void)p;
#endif
  return m;
}

// One tile of a whole chunk by TMA (thread 0): columns col0.. of rows tg.. of batch b.
template <int kRows, int kCols>
__device__ __forceinline__ void tma_tile(__nv_bfloat16* tile, const CUtensorMap* map, int col0, std::int64_t tg, int b,
                                         std::uint64_t* bar) {
#pragma unroll
  for (int half = 0; half < kCols / 64; ++half)
    tma_load_3d(tile + half * kRows * 64, map, {col0 + half * 64, static_cast<int>(tg), b}, bar);
}

// One chunk (c rows at token tg) into a free stage, counted on its `full` barrier, which counts each
// producer thread twice: once when its cp.async copies land, once (release) for its zero-fill
// stores. A whole chunk goes by TMA when the maps are valid: thread 0's second arrival expects the
// tiles' bytes, and it then issues the copies (the gates stay cp.async).
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void load_stage(__nv_bfloat16* stage, std::uint64_t* full, const RecurrenceParams& p,
                                           const TileMaps& maps, const Item& it, std::int64_t tg, int c, int h, int c0,
                                           int tid) {
  if (maps.valid && c == Tr::kChunk) {
    load_chunk_gates<Tr>(stage, p, it, tg, c, h, tid);
    mbarrier_arrive_on_copies(full);
    if (tid == 0) {  // this arrival also releases thread 0's stores, as the others' below do
      mbarrier_arrive_expect_tx(full, static_cast<std::uint32_t>(Tr::kStageTiles * sizeof(__nv_bfloat16)));
      const int b = static_cast<int>(it.batch);
      if (!kDeltaOnly) tma_tile<Tr::kChunk, Tr::kKeys>(stage, &maps.q, static_cast<int>(h * p.sq.s2), tg, b, full);
      tma_tile<Tr::kChunk, Tr::kKeys>(stage + Tr::kQ, &maps.k, static_cast<int>(h * p.sk.s2), tg, b, full);
      tma_tile<Tr::kChunk, Tr::kValueTile>(stage + Tr::kQ + Tr::kK, &maps.v, static_cast<int>(h * p.sv.s2 + c0), tg, b,
                                           full);
    } else {
      mbarrier_arrive(full);
    }
  } else {
    load_wgmma_chunk<Tr, kDeltaOnly>(stage, p, it, tg, c, h, c0, tid);
    mbarrier_arrive_on_copies(full);
    mbarrier_arrive(full);
  }
}

// The producer warpgroup: every chunk of the segment into the ring (load_stage), a stage once both
// consumers have released it. The vector gate's output launch stops at a steep chunk: its stage is
// then released with the verdict set (key_gate_sm90.cuh), and the producer issues nothing more and
// waits for what it has in flight, as it does after the last chunk (no copy may outlive the CTA).
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void produce_chunks(__nv_bfloat16* smem, std::uint64_t* full, std::uint64_t* empty,
                                               const RecurrenceParams& p, const TileMaps& maps, const Item& it, int h,
                                               int c0) {
  constexpr bool kStoppable = Tr::kKeyGate && !kDeltaOnly;
  const int tid = static_cast<int>(threadIdx.x);
  int n = 0;
  for (std::int64_t t = it.begin; t < it.end; t += Tr::kChunk, ++n) {
    const int s = n % Tr::kStages, round = n / Tr::kStages;
    if (round > 0) {
      mbarrier_wait(&empty[s], (round - 1) & 1);
      if (kStoppable && *reinterpret_cast<const int*>(smem + s * Tr::kStage + Tr::kVerdict)) break;
    }
    const int c = static_cast<int>(it.end - t < Tr::kChunk ? it.end - t : Tr::kChunk);
    const std::int64_t tg = it.start + t;
    load_stage<Tr, kDeltaOnly>(smem + s * Tr::kStage, &full[s], p, maps, it, tg, c, h, c0, tid);
  }
  if constexpr (kStoppable)
    for (int j = n > Tr::kStages ? n - Tr::kStages : 0; j < n; ++j)
      mbarrier_wait(&full[j % Tr::kStages], (j / Tr::kStages) & 1);
}

}  // namespace lcsm::cuda::detail
