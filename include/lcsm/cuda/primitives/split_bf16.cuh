// bf16 packing and the hi + lo split that keeps about 16 significant bits of an fp32 value in two
// bf16 terms (x = hi + lo, hi = bf16(x), lo = bf16(x - hi)): how the exact mode feeds fp32 values
// (states, decayed operands, scores) to bf16 tensor cores.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace lcsm::cuda::detail {

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

__device__ __forceinline__ void split_bf16(float x, __nv_bfloat16& hi, __nv_bfloat16& lo) {
  hi = __float2bfloat16_rn(x);
  lo = __float2bfloat16_rn(x - __bfloat162float(hi));
}

// Two values at once: hi and lo each packed as a bf16 pair (x0 in the low half).
__device__ __forceinline__ void split_pack_bf16(float x0, float x1, std::uint32_t& hi, std::uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
  const float2 hf = __bfloat1622float2(h);
  const __nv_bfloat162 l = __floats2bfloat162_rn(x0 - hf.x, x1 - hf.y);
  hi = *reinterpret_cast<const std::uint32_t*>(&h);
  lo = *reinterpret_cast<const std::uint32_t*>(&l);
}

// A packed bf16 pair back to two floats.
__device__ __forceinline__ float2 unpack_bf16(std::uint32_t x) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x));
}

}  // namespace lcsm::cuda::detail
