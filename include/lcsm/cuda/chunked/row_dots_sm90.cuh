// The row dots in the sm_90a kernel's epilogue (chunked/fwd_sm90.cuh, its kRowDots instances; the
// parts and their order: chunked/row_dots.cuh). A consumer's thread holds, of each chunk, columns
// c0 + 8 g + 2 (lane % 4) and + 1 (g < 8) of rows r0 and r0 + 8. Its pairs of q (k) are copied by
// cp.async into the output staging at the very places its own outputs will be staged, a chunk
// ahead (a load from global memory at the epilogue put its latency on the consumer's chain and
// doubled the passes' time: H100, 2026-12-07); the same thread reads them back, so it waits for
// its own copies only. Device code.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/row_dots.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/mma_sm80.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"

// A knob, prepared and not yet run (docs/building.md): where q's (k's) rows are 16-byte aligned,
// each lane copies two of its row's eight 16-byte groups (a quarter of the copies, whole sectors),
// and after a __syncwarp each warp reads its 16 rows back by ldmatrix, one a part (a quarter of
// the shared-memory reads, already in the accumulator's layout).
#ifndef LCSM_CUDA_ROW_DOTS_WIDE_COPIES
#define LCSM_CUDA_ROW_DOTS_WIDE_COPIES 0
#endif
// A knob, prepared and not yet run: a quad's four lanes finish a row's four parts by a reduce-scatter
// (three shuffles, and each lane writes one part) instead of a full sum of each part (eight shuffles,
// four predicated writes by one lane); the parts' sums keep one fixed order. An H200 profile
// (2026-12-07i, Nsight's stall samples by instruction) put the row-dot launches' extra time in the
// consumers' epilogue chain: the operand's shared-memory reads, spill reloads of its addresses,
// and these shuffles.
#ifndef LCSM_CUDA_ROW_DOTS_SCATTER
#define LCSM_CUDA_ROW_DOTS_SCATTER 0
#endif

namespace lcsm::cuda::detail {

// The output staging of a consumer: [token][value] rows of kValues = 64 bf16, 16-byte groups
// XOR-swizzled by the row, so that neither the fragment writes nor the row reads conflict: the
// stage tiles' layout (tile_offset, tiles_sm90.cuh) for a tile of one 64-column half, written
// without its half index and group mask, which ptxas cannot drop (tile_offset<64> here cost the
// row-dot instances about 140 instructions and 8 bytes of spill loads, statically).
template <int kValues>
__device__ __forceinline__ int staged_offset(int row, int col) {
  static_assert(kValues == 64, "the staging is one 64-column half of the tile layout");
  return row * kValues + (((col >> 3) ^ (row & 7)) << 3) + (col & 7);
}

// Where a thread's row dots are: the bases of its head's rows of the operand (at its first column)
// and of the row dots (at its first part), computed once per work item; its first column and
// accumulator row, its lane, and the row's width (the pass's value_dim).
struct RowDotPlace {
  const __nv_bfloat16* with;
  float* dots;
  int c0, r0, lane, V;

  __device__ static RowDotPlace make(const RecurrenceParams& p, std::int64_t batch, int h, int c0, int r0, int lane,
                                     int V) {
    const Strides4 &w = p.s_dot_with, &d = p.s_row_dots;
    return {static_cast<const __nv_bfloat16*>(p.dot_with) + batch * w.s0 + static_cast<std::int64_t>(h) * w.s2 + c0,
            p.row_dots + batch * d.s0 + static_cast<std::int64_t>(h) * d.s2 +
                static_cast<std::int64_t>(c0 / kRowDotColumns) * d.s3,
            c0,
            r0,
            lane,
            V};
  }
};

// Whether the copies go in 16-byte pieces (LCSM_CUDA_ROW_DOTS_WIDE_COPIES and aligned rows).
__device__ __forceinline__ bool row_dot_wide_copies(const RecurrenceParams& p) {
  if constexpr (LCSM_CUDA_ROW_DOTS_WIDE_COPIES) {
    const Strides4& s = p.s_dot_with;
    return reinterpret_cast<std::uintptr_t>(p.dot_with) % 16 == 0 && s.s0 % 8 == 0 && s.s1 % 8 == 0 && s.s2 % 8 == 0;
  } else {
    (void)p;
    return false;
  }
}

// Copies this thread's pairs of the chunk of `rows` rows at token tg into `staging` (free of the
// previous chunk's reads: the caller's barrier) and commits them as one group.
template <int kValues>
__device__ __forceinline__ void copy_row_dot_operand(__nv_bfloat16* staging, const RecurrenceParams& p,
                                                     const RowDotPlace& at, std::int64_t tg, int rows, bool wide) {
  const __nv_bfloat16* with = at.with;
  const int quad_lane = at.lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = at.r0 + half * 8;
    if (row >= rows) continue;
    const __nv_bfloat16* w = with + (tg + row) * p.s_dot_with.s1;
    if (wide) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int group = 2 * quad_lane + j;
        if (at.c0 + group * 8 < at.V) cp_async_16(staging + staged_offset<kValues>(row, group * 8), w + group * 8);
      }
    } else {
#pragma unroll
      for (int group = 0; group < kValues / 8; ++group)
        if (at.c0 + group * 8 < at.V)
          cp_async_4(staging + staged_offset<kValues>(row, group * 8 + 2 * quad_lane), w + group * 8 + 2 * quad_lane);
    }
  }
  cp_async_commit();
}

// This thread's sums over each part of its two rows (x[half][m]: row r0 + 8 half, part m), from the
// operand copied into the staging: 4-byte reads of its own pairs, or with wide copies one ldmatrix
// a part (the warp's 16 rows by the part's two 8-column groups, in the accumulator's layout: a
// quarter of the reads). Pairs past the chunk's rows or the row's width are left out.
template <int kValues>
__device__ __forceinline__ void row_part_sums(const float (&O)[32], const __nv_bfloat16* staging,
                                              const RecurrenceParams& p, const RowDotPlace& at, int rows, bool wide,
                                              float (&x)[2][kValues / kRowDotColumns]) {
  const int quad_lane = at.lane % 4, warp_row = at.r0 - at.lane / 4;
  auto add_pair = [&](float& sum, int i, std::uint32_t pair) {  // O[i], O[i + 1] times the pair
    const float2 y = unpack_bf16(pair);
    sum = fmaf(p.scale * O[i + 1], y.y, fmaf(p.scale * O[i], y.x, sum));
  };
#pragma unroll
  for (int m = 0; m < kValues / kRowDotColumns; ++m) {
    x[0][m] = x[1][m] = 0.f;
    if (wide) {
      const int j = at.lane / 8, row = warp_row + (j & 1) * 8 + at.lane % 8, group = 2 * m + (j >> 1);
      std::uint32_t y[4];  // y[k]: row r0 + 8 (k & 1), group 2m + (k >> 1)
      ldmatrix_x4(y, staging + staged_offset<kValues>(row, group * 8));
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int half = k & 1, g = 2 * m + (k >> 1);
        if (at.r0 + half * 8 < rows && at.c0 + g * 8 < at.V) add_pair(x[half][m], 4 * g + 2 * half, y[k]);
      }
    } else {
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int g = 2 * m; g < 2 * m + 2; ++g) {
          const int row = at.r0 + half * 8;
          if (row < rows && at.c0 + g * 8 < at.V)
            add_pair(
                x[half][m], 4 * g + 2 * half,
                *reinterpret_cast<const std::uint32_t*>(staging + staged_offset<kValues>(row, g * 8 + 2 * quad_lane)));
        }
    }
  }
}

// LCSM_CUDA_ROW_DOTS_SCATTER's finish for a consumer of 64 columns (four parts): the quad
// reduce-scatters (lanes exchange two parts across lane ^ 2, then one across lane ^ 1), so lane l
// ends with part l % 4 of its row and writes it. Part m's sum is always ((x_m[q0] + x_m[q2]) +
// (x_m[q1] + x_m[q3])) over the quad's lanes q: one fixed order.
__device__ __forceinline__ void scatter_row_dots(const float (&x)[2][4], const RecurrenceParams& p,
                                                 const RowDotPlace& at, std::int64_t tg, int rows) {
  const int part = at.lane % 4;
  const bool upper = part & 2, odd = part & 1;
  const Strides4& s = p.s_row_dots;
  float* dots = at.dots + static_cast<std::int64_t>(part) * s.s3;
  const bool part_in_row = at.c0 + part * kRowDotColumns < at.V;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    // Lanes 0, 1 keep parts 0, 1 and send 2, 3 to lanes 2, 3, which keep 2, 3; then each keeps one.
    const float* xs = x[half];
    const float keep0 = upper ? xs[2] : xs[0], keep1 = upper ? xs[3] : xs[1];
    const float send0 = upper ? xs[0] : xs[2], send1 = upper ? xs[1] : xs[3];
    const float a0 = keep0 + __shfl_xor_sync(0xFFFFFFFFu, send0, 2);
    const float a1 = keep1 + __shfl_xor_sync(0xFFFFFFFFu, send1, 2);
    const float mine = odd ? a1 : a0, theirs = odd ? a0 : a1;
    const float total = mine + __shfl_xor_sync(0xFFFFFFFFu, theirs, 1);
    const int row = at.r0 + half * 8;
    if (row < rows && part_in_row) dots[(tg + row) * s.s1] = total;
  }
}

// Waits for the copies and writes this thread's parts of the chunk's row dots: each row of the
// scaled accumulator O times the copied pairs, 16 columns a part (row_dot_store).
template <int kValues>
__device__ __forceinline__ void store_row_dots(const float (&O)[32], const __nv_bfloat16* staging,
                                               const RecurrenceParams& p, const RowDotPlace& at, std::int64_t tg,
                                               int rows, bool wide) {
  static_assert(kRowDotColumns == 16, "a part is two of a row's 8-column groups");
  constexpr int kParts = kValues / kRowDotColumns;
  cp_async_wait<0>();
  if (wide) __syncwarp();  // the warp's other lanes copied some of the rows it reads
  float x[2][kParts];
  row_part_sums<kValues>(O, staging, p, at, rows, wide, x);
  if constexpr (LCSM_CUDA_ROW_DOTS_SCATTER && kParts == 4) {
    scatter_row_dots(x, p, at, tg, rows);
  } else {
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int m = 0; m < kParts; ++m)
        row_dot_store(at.dots + (tg + at.r0 + half * 8) * p.s_row_dots.s1 + m * p.s_row_dots.s3, x[half][m],
                      at.r0 + half * 8 < rows && at.c0 + m * kRowDotColumns < at.V, at.lane);
  }
}

}  // namespace lcsm::cuda::detail
