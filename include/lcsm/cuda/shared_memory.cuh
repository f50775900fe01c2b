// Dynamic shared memory above 48 KB: cudaFuncSetAttribute applies to the current device, so a
// kernel's limit is set once per device (up to 64 devices are remembered; beyond that it is set on
// every call). The kernel is a template argument so that every kernel has its own flags (kernels
// share a type). Host code.
#pragma once

#include <cuda_runtime.h>

#include "lcsm/cuda/error.cuh"

namespace lcsm::cuda::detail {

inline int current_device() {
  int device = 0;
  LCSM_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

template <auto kKernel>
void allow_shared_memory(int bytes) {
  static bool done[64] = {};
  const int device = current_device();
  if (device < 64 && done[device]) return;
  LCSM_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (device < 64) done[device] = true;
}

}  // namespace lcsm::cuda::detail
