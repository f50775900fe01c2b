// CUDA API failures as lcsm::Error, naming the call and cudaGetErrorString.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "lcsm/core/error.hpp"

namespace lcsm::cuda {

inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    throw Error(std::string("lcsm: CUDA call ") + call + " failed at " + file + ":" + std::to_string(line) + ": " +
                cudaGetErrorString(status));
}

}  // namespace lcsm::cuda

#define LCSM_CUDA_CHECK(call) ::lcsm::cuda::check((call), #call, __FILE__, __LINE__)
