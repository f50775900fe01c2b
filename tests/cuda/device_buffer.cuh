// Test-side device memory: a host tensor's whole storage mirrored on the GPU with the same strides,
// so strided layouts and the NaN poison of outputs survive the round trip.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "lcsm/cuda/error.cuh"
#include "support/host_tensor.hpp"

namespace lcsm::test {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes_) LCSM_CUDA_CHECK(cudaMalloc(&ptr_, bytes_));
  }
  DeviceBuffer(const void* host, std::size_t bytes) : DeviceBuffer(bytes) {
    if (bytes_) LCSM_CUDA_CHECK(cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice));
  }
  explicit DeviceBuffer(const Tensor& t) : DeviceBuffer(t.data(), t.bytes()) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  void to_host(Tensor& t) const {
    if (bytes_) LCSM_CUDA_CHECK(cudaMemcpy(t.data(), ptr_, bytes_, cudaMemcpyDeviceToHost));
  }
  // A device view with the host tensor's shape and strides.
  template <class T>
  View<T, 4> view(const Tensor& like) const {
    return {static_cast<T*>(ptr_), like.shape(), like.strides()};
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace lcsm::test
