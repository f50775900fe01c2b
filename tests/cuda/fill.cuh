// Reproducible random inputs generated on the GPU: counter-based hashes of the element index, no
// state, the same values on every run with the same seed.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace lcsm::test {

__device__ __forceinline__ std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// N(0, 1) for element i (Box-Muller on two 24-bit uniforms).
__device__ __forceinline__ float normal_at(std::uint64_t seed, std::int64_t i) {
  const std::uint64_t r = splitmix(seed ^ splitmix(static_cast<std::uint64_t>(i)));
  const float u1 = (static_cast<float>(r >> 40) + 1.0f) * (1.0f / 16777217.0f);
  const float u2 = static_cast<float>((r >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

// N(0, 1) values in T (bf16: rounded to nearest).
template <class T>
__global__ void fill_normal(T* out, std::int64_t n, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) out[i] = __float2bfloat16_rn(normal_at(seed, i));
    else out[i] = normal_at(seed, i);
  }
}

// log-sigmoid(N(0, 1)) / 16, fp32: the gates of fla's tests (strictly negative, mean about -0.05).
template <int kUnused = 0>
__global__ void fill_log_gate(float* out, std::int64_t n, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = -log1pf(expf(-normal_at(seed, i))) / 16.0f;
}

// The value of bf16 bits copied back to the host.
inline float bf16_to_float(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace lcsm::test
