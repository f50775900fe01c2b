// The backward's decay-gradient terms from the passes' epilogues (RecurrenceParams::row_dots): the
// dq and dk passes also sum each output row times the same row of q (dk: k) while the row is still
// in fp32 registers, so that the passes can write dq and dk in the input type and nothing reads
// fp32 copies of them back (chunked/backward.cuh; the sm_90a kernel's kRowDots instances). Sums are
// kept per part of 16 columns, each written by exactly one quad of one warp, and the parts are
// added in a fixed order afterwards: the result does not depend on scheduling. Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/params.cuh"

namespace lcsm::cuda::detail {

constexpr int kRowDotColumns = 16;
__host__ __device__ constexpr int row_dot_parts(int columns) { return (columns + kRowDotColumns - 1) / kRowDotColumns; }

// Sums a part over its quad (the four lanes that share a row) and writes it to `at` from the quad's
// first lane. Every lane of the warp calls it (the shuffles); `valid`: the row is a token of this
// chunk and the part's first column is inside the row.
__device__ __forceinline__ void row_dot_store(float* at, float sum, bool valid, int lane) {
  sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
  sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
  if (valid && lane % 4 == 0) *at = sum;
}

}  // namespace lcsm::cuda::detail
