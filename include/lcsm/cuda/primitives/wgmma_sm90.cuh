// Warpgroup tensor-core primitives (sm_90a): wgmma.mma_async with bf16 operands and fp32
// accumulators, shared-memory matrix descriptors, and the fences that order them.
//
// Accumulator D of m64nNk16 (PTX ISA), thread t of the warpgroup, w = t / 32, l = t % 32:
//   d[i] is row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2.
// A from registers (m64k16): the m16n8k16 A fragment of each warp's 16 rows (see mma.cuh), so an
// accumulator's columns [16 k, 16 k + 16) become A's k-step k: pack(d[8k], d[8k+1]),
// pack(d[8k+2], d[8k+3]), pack(d[8k+4], d[8k+5]), pack(d[8k+6], d[8k+7]).
//
// Shared-memory operands in two layouts. No swizzle ("interleave", wgmma_descriptor): 8 x 8 core
// matrices of 128 contiguous bytes (8 rows of 16 bytes); for a "blocked" tile of R rows and C
// columns, element (r, c) sits at
//   (r / 8) * (C / 8) * 64 + (c / 8) * 64 + (r % 8) * 8 + c % 8          (elements)
// a K-major operand when its columns are the reduction (LBO = 128 bytes between column blocks,
// SBO = C * 16 bytes between row blocks) and an MN-major one when its rows are (LBO = C * 16,
// SBO = 128), with the transpose bit set; the sm_90a forward keeps its state operand so. The
// 128-byte swizzle (wgmma_descriptor_sw128): rows of 128 bytes whose 16-byte groups are permuted
// by the row's index mod 8, the layout a TMA box writes; the stage tiles (chunked/tiles_sm90.cuh).
#pragma once

#include <cstdint>

#include "lcsm/cuda/primitives/copy.cuh"

namespace lcsm::cuda::detail {

// Shared-memory matrix descriptor, no swizzle: start address, leading and stride byte offsets.
__device__ __forceinline__ std::uint64_t wgmma_descriptor(const void* smem, std::uint32_t leading_bytes,
                                                          std::uint32_t stride_bytes) {
  const std::uint64_t address = smem_address(smem);
  return ((address & 0x3FFFF) >> 4) | (static_cast<std::uint64_t>((leading_bytes & 0x3FFFF) >> 4) << 16) |
         (static_cast<std::uint64_t>((stride_bytes & 0x3FFFF) >> 4) << 32);
}

// The same for a tile in the 128-byte-swizzle canonical layout (rows of 128 bytes whose 16-byte
// groups are permuted by XOR with the row index mod 8, the pattern repeating every 1024 bytes, as
// a TMA map with CU_TENSOR_MAP_SWIZZLE_128B writes it): layout type 1 in bits 62-63. The start
// address may step by 32 bytes inside a row (the K steps of a K-major operand): the pattern's phase
// comes from the address bits, so the base offset field stays 0 for 1024-byte aligned tiles.
__device__ __forceinline__ std::uint64_t wgmma_descriptor_sw128(const void* smem, std::uint32_t leading_bytes,
                                                                std::uint32_t stride_bytes) {
  return wgmma_descriptor(smem, leading_bytes, stride_bytes) | (std::uint64_t{1} << 62);
}

// Orders register writes before the wgmma that reads them (accumulators and A fragments).
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// D (+)= A B, m64n64k16, A and B from shared memory. kTransA / kTransB: MN-major operand.
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], std::uint64_t a, std::uint64_t b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransA), "n"(kTransB));
}

// D (+)= A B, m64n64k16, A from registers (four bf16x2), B from shared memory.
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const std::uint32_t (&a)[4], std::uint64_t b,
                                                   bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransB));
}

// D (+)= A B, m64n128k16, A and B from shared memory. kTransA / kTransB: MN-major operand.
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], std::uint64_t a, std::uint64_t b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, "
      "%46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, "
      "%67, %68;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransA), "n"(kTransB));
}

// D (+)= A B, m64n128k16, A from registers (four bf16x2), B from shared memory.
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t b,
                                                    bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, "
      "%46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, "
      "%67}, %68, p, 1, 1, %70;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransB));
}

// The hi/lo products of the warpgroup kernels, written once: D += A_hi B (+ A_lo B when kLo), A from
// registers (m64nNk16) or from shared memory (two descriptors).
template <bool kLo, int kTransB>
__device__ __forceinline__ void wgmma_split_rs(float (&d)[32], const std::uint32_t (&hi)[4],
                                               const std::uint32_t (&lo)[4], std::uint64_t b) {
  wgmma_m64n64k16_rs<kTransB>(d, hi, b, true);
  if constexpr (kLo) wgmma_m64n64k16_rs<kTransB>(d, lo, b, true);
}
template <bool kLo, int kTransB>
__device__ __forceinline__ void wgmma_split_rs(float (&d)[64], const std::uint32_t (&hi)[4],
                                               const std::uint32_t (&lo)[4], std::uint64_t b) {
  wgmma_m64n128k16_rs<kTransB>(d, hi, b, true);
  if constexpr (kLo) wgmma_m64n128k16_rs<kTransB>(d, lo, b, true);
}
// D (+)= A (B_hi + B_lo): B split, A and B from shared memory.
template <bool kLo>
__device__ __forceinline__ void wgmma_split_ss(float (&d)[32], std::uint64_t a, std::uint64_t b_hi, std::uint64_t b_lo,
                                               bool accumulate) {
  wgmma_m64n64k16_ss<0, 0>(d, a, b_hi, accumulate);
  if constexpr (kLo) wgmma_m64n64k16_ss<0, 0>(d, a, b_lo, true);
}

}  // namespace lcsm::cuda::detail
