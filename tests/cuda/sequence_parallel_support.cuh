// What both sequence-parallel check files use: gate shaping, device-to-host fetches as double, and
// the relative RMS difference.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "lcsm/cuda/error.cuh"

namespace lcsm::test {

// Log-gates from fill_log_gate reshaped: every 8th token of a head at -20 (kind 1, strong), or
// divided by 50 (kind 2, weak: the state keeps thousands of tokens); kind 0 leaves them.
template <int kUnused = 0>
__global__ void shape_gates(float* g, std::int64_t n, std::int64_t width, int kind) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (kind == 1 && (i / width) % 8 == 3) g[i] = -20.f;
    if (kind == 2) g[i] /= 50.f;
  }
}

template <class E>
std::vector<double> fetch_as_double(const void* p, std::size_t count) {
  std::vector<E> raw(count);
  LCSM_CUDA_CHECK(cudaMemcpy(raw.data(), p, count * sizeof(E), cudaMemcpyDeviceToHost));
  std::vector<double> out(count);
  for (std::size_t i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<E, __nv_bfloat16>) out[i] = __bfloat162float(raw[i]);
    else out[i] = raw[i];
  }
  return out;
}

// ||got - want|| / ||want|| (NaN where got is not finite).
inline double relative_difference(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::quiet_NaN();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace lcsm::test
