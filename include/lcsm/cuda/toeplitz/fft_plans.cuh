// cuFFT plans for the Toeplitz FFT path: batched real transforms of length L over columns L + 2
// floats apart, in place. Plans are made once per (device, L, batch, direction) and kept for the
// process's life (as PyTorch's plan cache does): making one costs host time and cuFFT's own small
// device tables (an allocation, so not inside a CUDA graph capture: call the workspace query, which
// makes the same plans, before capturing). A call with shapes seen before makes none. cuFFT's work
// area is never allocated by cuFFT: it is a slice of the caller's workspace, set before each
// execution.
#pragma once

#include <cufft.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "lcsm/core/error.hpp"
#include "lcsm/cuda/error.cuh"

namespace lcsm::cuda::detail {

inline void check_cufft(cufftResult status, const char* call) {
  if (status != CUFFT_SUCCESS)
    throw Error(std::string("lcsm: cuFFT call ") + call + " failed with status " +
                std::to_string(static_cast<int>(status)));
}

enum class FftDirection { forward, inverse };  // real -> complex, complex -> real

class FftPlan {
 public:
  FftPlan(std::int64_t length, std::int64_t batch, FftDirection direction) : direction_(direction) {
    check_cufft(cufftCreate(&handle_), "cufftCreate");
    try {
      make(length, batch);
    } catch (...) {
      cufftDestroy(handle_);
      throw;
    }
  }
  ~FftPlan() { cufftDestroy(handle_); }
  FftPlan(const FftPlan&) = delete;
  FftPlan& operator=(const FftPlan&) = delete;

  std::size_t work_bytes() const { return work_bytes_; }

  // In place on `columns` (device), on `stream`, with `work` (work_bytes()) from the caller.
  void execute(float* columns, void* work, cudaStream_t stream) {
    const std::lock_guard<std::mutex> lock(use_);  // stream and work area belong to one execution
    check_cufft(cufftSetStream(handle_, stream), "cufftSetStream");
    check_cufft(cufftSetWorkArea(handle_, work), "cufftSetWorkArea");
    if (direction_ == FftDirection::forward)
      check_cufft(cufftExecR2C(handle_, columns, reinterpret_cast<cufftComplex*>(columns)), "cufftExecR2C");
    else check_cufft(cufftExecC2R(handle_, reinterpret_cast<cufftComplex*>(columns), columns), "cufftExecC2R");
  }

 private:
  void make(std::int64_t length, std::int64_t batch) {
    check_cufft(cufftSetAutoAllocation(handle_, 0), "cufftSetAutoAllocation");
    long long n[1] = {length}, real_embed[1] = {length + 2}, complex_embed[1] = {length / 2 + 1};
    const long long real_dist = length + 2, complex_dist = length / 2 + 1;
    const bool fwd = direction_ == FftDirection::forward;
    check_cufft(cufftMakePlanMany64(handle_, 1, n, fwd ? real_embed : complex_embed, 1, fwd ? real_dist : complex_dist,
                                    fwd ? complex_embed : real_embed, 1, fwd ? complex_dist : real_dist,
                                    fwd ? CUFFT_R2C : CUFFT_C2R, batch, &work_bytes_),
                "cufftMakePlanMany64");
  }

  cufftHandle handle_{};
  FftDirection direction_;
  std::size_t work_bytes_ = 0;
  std::mutex use_;
};

// The plan for (current device, L, batch, direction), made on first use.
inline FftPlan& fft_plan(std::int64_t length, std::int64_t batch, FftDirection direction) {
  static std::mutex mutex;
  static std::map<std::tuple<int, std::int64_t, std::int64_t, int>, std::unique_ptr<FftPlan>> plans;
  int device = 0;
  LCSM_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  auto& slot = plans[{device, length, batch, static_cast<int>(direction)}];
  if (!slot) slot = std::make_unique<FftPlan>(length, batch, direction);
  return *slot;
}

// Transforms of `groups` x `width` columns (ld = L + 2 floats apart) as one execution per set bit of
// `groups`, each of a plan whose batch is width x a power of two: the plans a process keeps are then
// bounded (about log2 of the largest group count per L and width), however the number of sequences
// varies from call to call.
template <class F>
void for_each_fft_group(std::int64_t groups, F&& f) {
  std::int64_t done = 0;
  for (int bit = 62; bit >= 0; --bit) {
    const std::int64_t g = std::int64_t{1} << bit;
    if (!(groups & g)) continue;
    f(done, g);
    done += g;
  }
}
inline std::size_t fft_columns_work_bytes(std::int64_t length, std::int64_t width, std::int64_t groups,
                                          FftDirection direction) {
  std::size_t work = 0;
  for_each_fft_group(groups, [&](std::int64_t, std::int64_t g) {
    work = std::max(work, fft_plan(length, width * g, direction).work_bytes());
  });
  return work;
}
inline void fft_columns(std::int64_t length, std::int64_t width, std::int64_t groups, FftDirection direction,
                        float* columns, void* work, cudaStream_t stream) {
  const std::int64_t ld = length + 2;
  for_each_fft_group(groups, [&](std::int64_t first, std::int64_t g) {
    fft_plan(length, width * g, direction).execute(columns + first * width * ld, work, stream);
  });
}

}  // namespace lcsm::cuda::detail
