// A prepared form of the vector gate's transform on the sm_90a kernel (key_gate_sm90.cuh), built
// with LCSM_CUDA_SM90_KEY_GATE_HALVES=1 (docs/building.md) and not yet run on a GPU: two warpgroups
// transform each stage, half its rows each, and the first also issues the loads, so that no
// warpgroup only loads (its registers go to the second transforming warp a scheduler, which the
// transform's latencies want: docs/decisions.md); the transform itself has no shuffles and one
// swizzled offset a row. The math, the stage layout and the fallback are key_gate_sm90.cuh's.
// Device code.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/key_gate_sm90.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/tiles_sm90.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/barrier_sm90.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/exp2.cuh"

namespace lcsm::cuda::detail {

// The transform of one landed stage's rows [32 kHalfIndex, 32 kHalfIndex + 32) by the thread of key `key` (a
// warpgroup, a thread per key); `between_blocks()` runs after each block of eight rows. Returns
// whether its rows' |L| stayed within kKeyGateSeparable (false for NaN); T = (total.x, total.y) for
// the second half and in the delta launch.
// L runs from row 0 whichever the half: the second half's warpgroup first sums the first half's
// gates (so both halves round as one thread over the chunk would), and the first half's waits for
// that before it overwrites them (named barrier 4; in the delta launch, which needs T first, both
// sum all the gates and then meet there).
// Row t of the key lies at the same offset from the key's column in every tile (q, k, the two lo
// tiles: tile_offset<C>(t, key)), t * 64 plus its 16-byte group's swizzled place, and its gate at
// half that from the gate's column (key_gate_word): one offset a row serves all five accesses. The
// lo terms are written where the gates of the key's group of eight lay: those eight keys are eight
// lanes of this warp, which have read that row's gates before (the block's loads come first; the
// warp barrier makes that an order for the memory model, not only for the hardware).
template <class Tr, bool kDeltaOnly, int kHalfIndex, class BetweenBlocks>
__device__ __forceinline__ bool key_gate_transform_half(__nv_bfloat16* stage, int key, float2& total,
                                                        BetweenBlocks&& between_blocks) {
  constexpr int C = Tr::kChunk, kHalf = C / 2, kRows = 8, kMeet = 4;
  constexpr int row0 = kHalfIndex * kHalf;
  const int group = (key >> 3) & 7;
  __nv_bfloat16* const q_at = stage + (key >> 6) * C * 64 + (key & 7);  // + row offset: tile_offset<C>(t, key)
  __nv_bfloat16* const k_at = q_at + Tr::kQ;
  __nv_bfloat16* const q_lo_at = q_at + Tr::kLoTiles;
  __nv_bfloat16* const k_lo_at = q_lo_at + Tr::kLoTile;
  const float* const gate_at = reinterpret_cast<const float*>(stage + Tr::kLoTiles) + key_gate_word<Tr>(0, key) -
                               (group << 2);  // + row offset / 2
  auto row_offset = [&](int t) { return t * 64 + ((group ^ (t & 7)) << 3); };
  auto sum_gates = [&](GateSum& L, int from, int to) {
    for (int t0 = from; t0 < to; t0 += kRows) {
      float g[kRows];
#pragma unroll
      for (int u = 0; u < kRows; ++u) g[u] = gate_at[row_offset(t0 + u) / 2];
#pragma unroll
      for (int u = 0; u < kRows; ++u) L.add(g[u]);
    }
  };
  GateSum L;
  float th = 0.f, tl = 0.f;
  if constexpr (kDeltaOnly) {  // T first: K~'s exponents are T - L
    sum_gates(L, 0, kHalf);
    const GateSum at_half = L;
    sum_gates(L, kHalf, C);
    th = L.h, tl = L.l;
    L = kHalfIndex ? at_half : GateSum{};
    named_barrier_sync(kMeet, Tr::kTransformThreads);
  } else if constexpr (kHalfIndex == 1) {
    sum_gates(L, 0, kHalf);
    named_barrier_arrive(kMeet, Tr::kTransformThreads);
  }
  bool gentle = true;
  // A block of rows at a time: its loads first, then its math and stores. Row by row, each row's
  // stores into the tiles might alias the next row's loads for all the compiler knows, and every
  // row's whole latency (loads, exponentials) would be exposed.
  for (int t0 = row0; t0 < row0 + kHalf; t0 += kRows) {
    float g[kRows], q[kRows], k[kRows];
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const int at = row_offset(t0 + u);
      g[u] = gate_at[at / 2];
      k[u] = __bfloat162float(k_at[at]);
      q[u] = kDeltaOnly ? 0.f : __bfloat162float(q_at[at]);
    }
    __syncwarp();
    if (!kDeltaOnly && kHalfIndex == 0 && t0 == 0) named_barrier_sync(kMeet, Tr::kTransformThreads);
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const int at = row_offset(t0 + u);
      L.add(g[u]);
      gentle = gentle && L.h >= -kKeyGateSeparable && L.h <= kKeyGateSeparable;
      if constexpr (kDeltaOnly) {
        const float kx = k[u] * exp2_pair(th - L.h, tl - L.l);
        const __nv_bfloat16 k_hi = __float2bfloat16_rn(kx);
        k_at[at] = k_hi;
        k_lo_at[at] = __float2bfloat16_rn(kx - __bfloat162float(k_hi));
      } else {
        const float qx = q[u] * exp2_pair(L.h, L.l), kx = k[u] * exp2_pair(-L.h, -L.l);
        const __nv_bfloat162 hi = __floats2bfloat162_rn(qx, kx);
        const __nv_bfloat162 lo = __floats2bfloat162_rn(qx - __low2float(hi), kx - __high2float(hi));
        q_at[at] = hi.x, k_at[at] = hi.y, q_lo_at[at] = lo.x, k_lo_at[at] = lo.y;
      }
    }
    between_blocks();
  }
  total = kDeltaOnly ? make_float2(th, tl) : make_float2(L.h, L.l);
  return gentle;
}

// The two transform warpgroups under the vector gate (kHalfIndex 0 and 1): each chunk once it has
// landed, half its rows each, announced on `ready` (the consumers wait there, not on `full`). The
// first also loads the chunks (load_stage, tiles_sm90.cuh): each of its threads issues its part of
// a chunk's copies as soon as it finds the stage free, checked while it waits for a chunk and after
// each block of rows, so that loads run as far ahead as the ring allows without a warpgroup of
// their own. At a steep chunk of the output launch both stop: the CTA's fallback flag and the
// stage's verdict are set, the consumers stop there, and the loads in flight are waited for (no copy
// may outlive the CTA).
template <class Tr, bool kDeltaOnly, int kHalfIndex>
__device__ __forceinline__ void transform_key_gate_halves(__nv_bfloat16* smem, std::uint64_t* full,
                                                          std::uint64_t* empty, std::uint64_t* ready,
                                                          const RecurrenceParams& p, const TileMaps& maps,
                                                          const Item& it, int h, int c0, std::int64_t item_index,
                                                          int value_block) {
  constexpr int C = Tr::kChunk, S = Tr::kStages;
  const int key = static_cast<int>(threadIdx.x % 128);
  constexpr bool loads = kHalfIndex == 0;
  const std::int64_t chunks = (it.end - it.begin + C - 1) / C;
  std::int64_t issued = 0;
  auto try_issue = [&] {  // this thread's part of the next chunk's copies, if its stage is free
    if (issued >= chunks) return;
    const int s = static_cast<int>(issued % S);
    const std::int64_t round = issued / S;
    if (round > 0 && !mbarrier_test_wait(&empty[s], static_cast<std::uint32_t>((round - 1) & 1))) return;
    const std::int64_t t = it.begin + issued * C;
    const int c = static_cast<int>(it.end - t < C ? it.end - t : C);
    load_stage<Tr, kDeltaOnly>(smem + s * Tr::kStage, &full[s], p, maps, it, it.start + t, c, h, c0, key);
    ++issued;
  };
  double segment_log2 = 0;  // the delta launch's total log2-decay of this thread's key
  for (std::int64_t n = 0; n < chunks; ++n) {
    const int s = static_cast<int>(n % S);
    const auto parity = static_cast<std::uint32_t>((n / S) & 1);
    if (loads) {
      while (issued < chunks && !mbarrier_test_wait(&full[s], parity)) try_issue();
      mbarrier_wait(&full[s], parity);  // nothing left to issue: a suspending wait, not a spin
    } else {
      mbarrier_wait(&full[s], parity);
    }
    __nv_bfloat16* stage = smem + s * Tr::kStage;
    float2 total;
    const bool gentle = key_gate_transform_half<Tr, kDeltaOnly, kHalfIndex>(stage, key, total, [&] {
      if constexpr (loads) try_issue();
    });
    if (kHalfIndex == 1) reinterpret_cast<float*>(stage + Tr::kFactors)[key] = exp2_pair(total.x, total.y);
    if constexpr (kDeltaOnly) {
      segment_log2 += static_cast<double>(total.x) + static_cast<double>(total.y);
    } else {
      const bool steep = named_barrier_any(3, Tr::kTransformThreads, !gentle);
      if (loads && key == 0) *reinterpret_cast<int*>(stage + Tr::kVerdict) = steep;
      if (steep) {
        if (loads && key == 0) p.fallback_flags[blockIdx.x] = 1;
        mbarrier_arrive(&ready[s]);
        if (loads) {
          // Every thread issues the chunks whose stages the consumers still release (up to n + S - 1;
          // some threads may have issued them already: a stage's `full` counts all of them), then
          // waits for them to land.
          const std::int64_t last = n + S < chunks ? n + S : chunks;
          while (issued < last) {
            mbarrier_wait(&empty[issued % S], static_cast<std::uint32_t>((issued / S - 1) & 1));
            try_issue();
          }
          for (std::int64_t j = n + 1; j < last; ++j)
            mbarrier_wait(&full[j % S], static_cast<std::uint32_t>((j / S) & 1));
        }
        return;
      }
    }
    fence_async_shared();  // the decayed tiles, written by this thread, seen by the wgmma reads
    mbarrier_arrive(&ready[s]);
  }
  if (kDeltaOnly && value_block == 0 && kHalfIndex == 1)
    p.segment_log_decay[(item_index * p.heads + h) * p.key_dim + key] = static_cast<float>(segment_log2);
}

}  // namespace lcsm::cuda::detail
