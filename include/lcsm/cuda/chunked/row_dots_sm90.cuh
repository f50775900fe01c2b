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

// Measured and dropped (H100, 2026-12-07, docs/performance.md): 16-byte copies read back by
// ldmatrix, and a quad's reduce-scatter of the parts (the lightning training step 3% faster at 64K,
// the scalar gate's unchanged, and racecheck warnings in the wide copies' read-back).

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

// Copies this thread's pairs of the chunk of `rows` rows at token tg into `staging` (free of the
// previous chunk's reads: the caller's barrier) and commits them as one group.
template <int kValues>
__device__ __forceinline__ void copy_row_dot_operand(__nv_bfloat16* staging, const RecurrenceParams& p,
                                                     const RowDotPlace& at, std::int64_t tg, int rows) {
  const __nv_bfloat16* with = at.with;
  const int quad_lane = at.lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = at.r0 + half * 8;
    if (row >= rows) continue;
    const __nv_bfloat16* w = with + (tg + row) * p.s_dot_with.s1;
#pragma unroll
    for (int group = 0; group < kValues / 8; ++group)
      if (at.c0 + group * 8 < at.V)
        cp_async_4(staging + staged_offset<kValues>(row, group * 8 + 2 * quad_lane), w + group * 8 + 2 * quad_lane);
  }
  cp_async_commit();
}

// This thread's sums over each part of its two rows (x[half][m]: row r0 + 8 half, part m), from
// its own pairs of the operand copied into the staging; pairs past the chunk's rows or the row's
// width are left out.
template <int kValues>
__device__ __forceinline__ void row_part_sums(const float (&O)[32], const __nv_bfloat16* staging,
                                              const RecurrenceParams& p, const RowDotPlace& at, int rows,
                                              float (&x)[2][kValues / kRowDotColumns]) {
  const int quad_lane = at.lane % 4;
  auto add_pair = [&](float& sum, int i, std::uint32_t pair) {  // O[i], O[i + 1] times the pair
    const float2 y = unpack_bf16(pair);
    sum = fmaf(p.scale * O[i + 1], y.y, fmaf(p.scale * O[i], y.x, sum));
  };
#pragma unroll
  for (int m = 0; m < kValues / kRowDotColumns; ++m) {
    x[0][m] = x[1][m] = 0.f;
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

// Waits for the copies and writes this thread's parts of the chunk's row dots: each row of the
// scaled accumulator O times the copied pairs, 16 columns a part (row_dot_store).
template <int kValues>
__device__ __forceinline__ void store_row_dots(const float (&O)[32], const __nv_bfloat16* staging,
                                               const RecurrenceParams& p, const RowDotPlace& at, std::int64_t tg,
                                               int rows) {
  static_assert(kRowDotColumns == 16, "a part is two of a row's 8-column groups");
  constexpr int kParts = kValues / kRowDotColumns;
  cp_async_wait<0>();
  float x[2][kParts];
  row_part_sums<kValues>(O, staging, p, at, rows, x);
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int m = 0; m < kParts; ++m)
      row_dot_store(at.dots + (tg + at.r0 + half * 8) * p.s_row_dots.s1 + m * p.s_row_dots.s3, x[half][m],
                    at.r0 + half * 8 < rows && at.c0 + m * kRowDotColumns < at.V, at.lane);
}

}  // namespace lcsm::cuda::detail
