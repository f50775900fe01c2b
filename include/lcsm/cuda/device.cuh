// The CUDA backend's device handle: a stream and caller-owned scratch memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace lcsm::cuda {

// Scratch memory the caller owns (device memory, 256-byte aligned). Calls that need scratch say
// how much through lcsm::cuda::workspace_bytes(...) and throw lcsm::Error when given too little;
// nothing inside a call allocates.
struct Workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

// All work is enqueued on `stream`; no call synchronises the host with the device.
struct Device {
  cudaStream_t stream = nullptr;
  Workspace workspace;
};

}  // namespace lcsm::cuda
