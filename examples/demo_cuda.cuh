// What the GPU demo's files share: device memory, timing by CUDA events, the error measure, and
// the other families' section (demo_cuda_families.cu).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lcsm/cuda/error.cuh"

namespace demo {

struct DeviceMemory {
  void* p = nullptr;
  explicit DeviceMemory(std::size_t bytes) {
    if (bytes) LCSM_CUDA_CHECK(cudaMalloc(&p, bytes));
  }
  ~DeviceMemory() {
    if (p) cudaFree(p);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
};

// Median milliseconds of `reps` calls of fn (after one warm-up call), by CUDA events.
template <class Fn>
double median_ms(Fn&& fn, int reps = 10) {
  cudaEvent_t a, b;
  LCSM_CUDA_CHECK(cudaEventCreate(&a));
  LCSM_CUDA_CHECK(cudaEventCreate(&b));
  fn();
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    LCSM_CUDA_CHECK(cudaEventRecord(a));
    fn();
    LCSM_CUDA_CHECK(cudaEventRecord(b));
    LCSM_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LCSM_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

inline double rel_rms(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

// The scalar and vector gates, cosFormer and the Toeplitz convolution at T tokens (H = 16,
// K = V = 128; Toeplitz C = 1024), bf16: times and errors against float64.
void other_families(std::int64_t T);

}  // namespace demo
