// The backward's decay-gradient terms from the passes' epilogues (RecurrenceParams::row_dots): the
// dq and dk passes also sum each output row times the same row of q (dk: k) while the row is still
// in fp32 registers, so that the passes can write dq and dk in the input type and nothing reads
// fp32 copies of them back (chunked/backward.cuh; the sm_90a kernel's kRowDots instances). Sums are
// kept per part of 64 columns (one consumer warpgroup's), each written by exactly one lane, and the parts are added in a fixed order afterwards: the result does not depend on
// scheduling. (Parts of 16 columns, four times the stores and shuffles, made the epilogue spill.)
// Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/params.cuh"

namespace lcsm::cuda::detail {

constexpr int kRowDotColumns = 64;
__host__ __device__ constexpr int row_dot_parts(int columns) { return (columns + kRowDotColumns - 1) / kRowDotColumns; }

// The sum over a quad (the four lanes that share an accumulator row); every lane of the warp calls it.
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xFFFFFFFFu, x, 1);
  return x + __shfl_xor_sync(0xFFFFFFFFu, x, 2);
}

}  // namespace lcsm::cuda::detail
