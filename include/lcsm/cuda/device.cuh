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

// Which kernels a call may run. `automatic` takes the fastest for the device and the shapes
// (warpgroup MMAs on Hopper for bf16 with K <= 128; the Toeplitz forward's fused FFT convolution at
// the lengths where it was measured faster than cuFFT); `portable` keeps to the mma.sync kernels that
// serve every sm_80+ device and to cuFFT for the Toeplitz forward, so that they can be compared
// with, and tested on, a Hopper card; `fused_fft` is `automatic` with the Toeplitz forward on the
// fused FFT convolution at every length it takes (FFT length 4096 to 2^22), cuFFT's otherwise. All
// compute the same function within the dtype's tolerance.
enum class Kernels { automatic, portable, fused_fft };

// All work is enqueued on `stream`; no call synchronises the host with the device.
struct Device {
  cudaStream_t stream = nullptr;
  Workspace workspace;
  Kernels kernels = Kernels::automatic;
};

}  // namespace lcsm::cuda
