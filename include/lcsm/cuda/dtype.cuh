// CUDA's 16-bit element types: names, and conversions to and from float.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "lcsm/core/dtype.hpp"

namespace lcsm {

template <>
struct DtypeName<__half> {
  static constexpr const char* value = "float16";
};
template <>
struct DtypeName<__nv_bfloat16> {
  static constexpr const char* value = "bfloat16";
};

namespace cuda {

namespace detail {
// The element types of the CUDA backend's inputs.
template <class T>
constexpr bool is_cuda_input_v =
    std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
}  // namespace detail

template <class T>
__device__ __forceinline__ float to_float(T x) {
  return static_cast<float>(x);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T>
__device__ __forceinline__ T from_float(float x) {
  return static_cast<T>(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace cuda
}  // namespace lcsm
