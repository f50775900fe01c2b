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

// A knob, prepared and not yet run (docs/building.md): where q's (k's) rows are 16-byte aligned,
// each lane copies two of its row's eight 16-byte groups (a quarter of the copies, whole sectors),
// and the quad's lanes meet at a __syncwarp before reading each other's.
#ifndef LCSM_CUDA_ROW_DOTS_WIDE_COPIES
#define LCSM_CUDA_ROW_DOTS_WIDE_COPIES 0
#endif

namespace lcsm::cuda::detail {

// The output staging of a consumer: [token][value] rows of kValues bf16, 16-byte groups XOR-swizzled
// by the row, so that neither the fragment writes nor the row reads conflict.
template <int kValues>
__device__ __forceinline__ int staged_offset(int row, int col) {
  return row * kValues + (((col >> 3) ^ (row & 7)) << 3) + (col & 7);
}

// Where a thread's row dots are: its batch row, head, first column and accumulator row, its lane,
// and the row's width (the pass's value_dim).
struct RowDotPlace {
  std::int64_t batch;
  int h, c0, r0, lane, V;
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
  const __nv_bfloat16* with = static_cast<const __nv_bfloat16*>(p.dot_with) + at.batch * p.s_dot_with.s0 +
                              static_cast<std::int64_t>(at.h) * p.s_dot_with.s2 + at.c0;
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

// Waits for the copies and writes this thread's parts of the chunk's row dots: each row of the
// scaled accumulator O times the copied pairs, 16 columns a part (row_dot_store).
template <int kValues>
__device__ __forceinline__ void store_row_dots(const float (&O)[32], const __nv_bfloat16* staging,
                                               const RecurrenceParams& p, const RowDotPlace& at, std::int64_t tg,
                                               int rows, bool wide) {
  static_assert(kRowDotColumns == 16, "a part is two of a row's 8-column groups");
  cp_async_wait<0>();
  if (wide) __syncwarp();  // the quad's other lanes copied some of this thread's pairs
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = at.r0 + half * 8;
#pragma unroll
    for (int m = 0; m < kValues / kRowDotColumns; ++m) {
      float sum = 0.f;
#pragma unroll
      for (int group = 2 * m; group < 2 * m + 2; ++group) {
        const int i = 4 * group + 2 * half;  // O[i], O[i + 1]: this row, columns group * 8 + 2 (lane % 4)
        if (row < rows && at.c0 + group * 8 < at.V) {
          const int col = group * 8 + 2 * (at.lane % 4);
          const float2 x =
              __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(staging + staged_offset<kValues>(row, col)));
          sum = fmaf(p.scale * O[i + 1], x.y, fmaf(p.scale * O[i], x.x, sum));
        }
      }
      row_dot_store(p, at.batch, tg + row, at.h, at.c0 / kRowDotColumns + m, sum,
                    row < rows && at.c0 + m * kRowDotColumns < at.V, at.lane);
    }
  }
}

}  // namespace lcsm::cuda::detail
