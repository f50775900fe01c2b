// Warp-level tensor-core primitives (sm_80+): the bf16 m16n8k16 MMA with fp32 accumulation and
// ldmatrix, plus the hi/lo split product written once (split_mma).
//
// Fragment layouts (PTX ISA, m16n8k16), g = lane / 4, t = lane % 4:
//   A (16 x 16): a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 8+2t..)  a3 (g+8, 8+2t..)
//   B (16 x 8):  b0 (k 2t..2t+1, n g)              b1 (k 8+2t.., n g)
//   C (16 x 8):  c0,c1 (g, 2t..2t+1)               c2,c3 (g+8, 2t..2t+1)
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/primitives/copy.cuh"

namespace lcsm::cuda::detail {

__device__ __forceinline__ void mma_bf16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                         std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 b16 matrices; lane l supplies the address of row (l % 8) of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}

// An operand that may carry a lo bf16 term (x = hi + lo, about 16 significant bits).
struct SplitA {
  std::uint32_t hi[4], lo[4];
};
struct SplitB {
  std::uint32_t hi[4], lo[4];  // two n-tiles: {hi[0], hi[1]} and {hi[2], hi[3]}
};

// The hi/lo product, written once for every product of the mma.sync kernels: for the two n-tiles of
// an x4 B fragment, acc += A_hi B_hi (+ A_lo B_hi when kALo) (+ A_hi B_lo when kBLo). The lo * lo
// term is below fp32 rounding of the sum and is never formed.
template <bool kALo, bool kBLo>
__device__ __forceinline__ void split_mma(float (&acc0)[4], float (&acc1)[4], const SplitA& a, const SplitB& b) {
  mma_bf16(acc0, a.hi, b.hi[0], b.hi[1]);
  mma_bf16(acc1, a.hi, b.hi[2], b.hi[3]);
  if constexpr (kALo) {
    mma_bf16(acc0, a.lo, b.hi[0], b.hi[1]);
    mma_bf16(acc1, a.lo, b.hi[2], b.hi[3]);
  }
  if constexpr (kBLo) {
    mma_bf16(acc0, a.hi, b.lo[0], b.lo[1]);
    mma_bf16(acc1, a.hi, b.lo[2], b.lo[3]);
  }
}

}  // namespace lcsm::cuda::detail
