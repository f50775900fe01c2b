// Tensor-memory-accelerator (TMA) loads (sm_90): a tensor map made on the host, a bulk tensor copy
// into shared memory issued by one thread and completed on an mbarrier by transaction bytes. The
// driver's encoder is reached through the runtime (cudaGetDriverEntryPointByVersion), so that
// lcsm::cuda links no libcuda.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lcsm/cuda/primitives/copy.cuh"

namespace lcsm::cuda::detail {

// One arrival that also expects `bytes` more transaction bytes before the phase completes.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)), "r"(bytes)
               : "memory");
}

// The box of a rank-3 `map` at coordinates c[0..2] into shared memory at dst (aligned as the map's
// swizzle wants: 1 KB for 128 bytes), counted on `bar` by its bytes.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, const int (&c)[3], std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_address(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(smem_address(bar))
      : "memory");
}

// cuTensorMapEncodeTiled, found once per process (null when the driver has none).
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      fn = nullptr;
    (void)cudaGetLastError();
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
}

// A bf16 tensor map of rank kRank: extents and byte strides of dimensions 1..kRank-1 (dimension 0
// has unit stride), the box and the shared-memory swizzle. False when the encoder refuses it (the
// caller keeps its other path).
template <int kRank>
inline bool encode_bf16_map(CUtensorMap& map, const void* base, const std::uint64_t (&extent)[kRank],
                            const std::uint64_t (&stride_bytes)[kRank - 1], const std::uint32_t (&box)[kRank],
                            CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_NONE) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode) return false;
  cuuint32_t unit[kRank];
  for (int i = 0; i < kRank; ++i) unit[i] = 1;
  return encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, kRank, const_cast<void*>(base), extent, stride_bytes, box, unit,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace lcsm::cuda::detail
