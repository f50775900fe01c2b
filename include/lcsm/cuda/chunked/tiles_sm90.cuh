// The sm_90a forward's tiles (chunked/fwd_sm90.cuh): the blocked layout its warpgroup MMAs read,
// the producer warpgroup's cp.async loads of a chunk into a ring stage, and the state's transposed
// accumulator to and from global memory. Tr: the kernel's traits (Sm90Traits).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/barrier_sm90.cuh"
#include "lcsm/cuda/primitives/copy.cuh"

namespace lcsm::cuda::detail {

// Element offset of (r, c) in a blocked tile of `cols` columns.
__device__ __forceinline__ int blocked(int r, int c, int cols) {
  return (r >> 3) * (cols << 3) + (c >> 3) * 64 + (r & 7) * 8 + (c & 7);
}

// Rows [t0, t0 + kRows) x columns [c0, c0 + kCols) of one head into a blocked tile by 16-byte
// cp.async; rows >= count and columns >= dim are zero. Consecutive threads fill one core matrix;
// a thread's column is the same in every pass and its row advances by a fixed step, so one base
// pointer serves all its copies.
template <int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_blocked(__nv_bfloat16* tile, const __nv_bfloat16* head, std::int64_t row_stride,
                                             std::int64_t t0, int count, int c0, int dim, int tid) {
  constexpr int kColBlocks = kCols / 8, kPasses = kRows * kColBlocks / kThreads;
  constexpr int kRowStep = kThreads / kColBlocks;  // rows between a thread's passes
  const int cb = (tid >> 3) % kColBlocks, r0 = (tid & 7) + (tid / (8 * kColBlocks)) * 8;
  const int col = c0 + cb * 8;
  __nv_bfloat16* dst = tile + blocked(r0, cb * 8, kCols);
  const __nv_bfloat16* src = head + (t0 + r0) * row_stride + col;
  const std::int64_t step = kRowStep * row_stride;
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    __nv_bfloat16* d = dst + i * (kRowStep / 8) * kCols * 8;
    if (r0 + i * kRowStep < count && col < dim) cp_async_16(d, src + i * step);
    else *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
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
  if (!kDeltaOnly) load_blocked<Tr::kChunk, Tr::kKeys, kT>(stage, q, p.sq.s1, tg, c, 0, p.key_dim, tid);
  load_blocked<Tr::kChunk, Tr::kKeys, kT>(stage + Tr::kQ, k, p.sk.s1, tg, c, 0, p.key_dim, tid);
  load_blocked<Tr::kChunk, Tr::kValueTile, kT>(stage + Tr::kQ + Tr::kK, v, p.sv.s1, tg, c, c0, p.value_dim, tid);
  if constexpr (Tr::kTokenGate) {
    float* gates = reinterpret_cast<float*>(stage + Tr::kStageTiles);
    for (int r = tid; r < Tr::kChunk; r += kT) {
      if (r < c) load_token_gate(gates + r, p, it.batch, it.start, tg + r, h);
      else gates[r] = 0.f;
    }
  }
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

// The producer warpgroup: every chunk of the segment into the ring, a stage once both consumers
// have released it. A stage's `full` barrier counts each producer thread twice: once when its
// cp.async copies land, once (release) for its zero-fill stores.
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void produce_chunks(__nv_bfloat16* smem, std::uint64_t* full, std::uint64_t* empty,
                                               const RecurrenceParams& p, const Item& it, int h, int c0) {
  const int tid = static_cast<int>(threadIdx.x);
  int n = 0;
  for (std::int64_t t = it.begin; t < it.end; t += Tr::kChunk, ++n) {
    const int s = n % Tr::kStages, round = n / Tr::kStages;
    if (round > 0) mbarrier_wait(&empty[s], (round - 1) & 1);
    const int c = static_cast<int>(it.end - t < Tr::kChunk ? it.end - t : Tr::kChunk);
    load_wgmma_chunk<Tr, kDeltaOnly>(smem + s * Tr::kStage, p, it, it.start + t, c, h, c0, tid);
    mbarrier_arrive_on_copies(&full[s]);
    mbarrier_arrive(&full[s]);
  }
}

}  // namespace lcsm::cuda::detail
