// What the CUDA runner's family files share: the dtype switch, device copies of cu_seqlens, and the
// device handle every call gets (kernels from LCSM_TEST_KERNELS: "portable" runs the suite on the
// mma.sync kernels on a Hopper card too).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/device_buffer.cuh"
#include "lcsm/cuda.cuh"
#include "support/backend.hpp"

namespace lcsm::test {

template <class F>
void dispatch_cuda(Dtype d, F&& f) {
  switch (d) {
    case Dtype::f32: f(float{}); return;
    case Dtype::f16: f(__half{}); return;
    case Dtype::bf16: f(__nv_bfloat16{}); return;
    default: throw Error(std::string("cuda backend: unsupported dtype ") + name(d));
  }
}

inline cuda::Kernels test_kernels() {
  static const cuda::Kernels kernels = [] {
    const char* e = std::getenv("LCSM_TEST_KERNELS");
    return e && std::strcmp(e, "portable") == 0 ? cuda::Kernels::portable : cuda::Kernels::automatic;
  }();
  return kernels;
}

// The dtypes the runner covers: all three, or those LCSM_TEST_DTYPES lists ("bf16,f16,f32"), so a
// second pass (portable kernels, compute-sanitizer) can repeat only what differs.
inline std::vector<Dtype> test_dtypes() {
  static const std::vector<Dtype> dtypes = [] {
    const char* e = std::getenv("LCSM_TEST_DTYPES");
    std::vector<Dtype> all{Dtype::bf16, Dtype::f16, Dtype::f32}, chosen;
    if (!e) return all;
    const std::string list = std::string(",") + e + ",";
    const char* tags[] = {"bf16", "f16", "f32"};
    for (int i = 0; i < 3; ++i)
      if (list.find(std::string(",") + tags[i] + ",") != std::string::npos) chosen.push_back(all[i]);
    return chosen.empty() ? all : chosen;
  }();
  return dtypes;
}

// A device for one call, with `bytes` of workspace owned by the caller.
inline cuda::Device test_device(const DeviceBuffer& workspace) {
  return cuda::Device{nullptr, {workspace.get(), workspace.bytes()}, test_kernels()};
}

struct DeviceOffsets {
  DeviceBuffer buffer;
  CuSeqlens view;
  explicit DeviceOffsets(const Offsets* cu) {
    if (!cu) return;
    if (cu->use64) {
      buffer = DeviceBuffer(cu->i64.data(), cu->i64.size() * sizeof(std::int64_t));
      view = CuSeqlens(static_cast<const std::int64_t*>(buffer.get()), static_cast<index_t>(cu->i64.size()));
    } else {
      buffer = DeviceBuffer(cu->i32.data(), cu->i32.size() * sizeof(std::int32_t));
      view = CuSeqlens(static_cast<const std::int32_t*>(buffer.get()), static_cast<index_t>(cu->i32.size()));
    }
  }
};

// Device copies of a backward call's states (each may be absent) as the StateGrads views, and the
// initial state's gradient brought back.
struct DeviceStateGrads {
  DeviceBuffer initial, d_final, d_initial;
  StateGrads<float> views;
  DeviceStateGrads(const Tensor* s0, const Tensor* dsT, Tensor* ds0)
      : initial(s0 ? DeviceBuffer(*s0) : DeviceBuffer()), d_final(dsT ? DeviceBuffer(*dsT) : DeviceBuffer()),
        d_initial(ds0 ? DeviceBuffer(*ds0) : DeviceBuffer()), views{s0 ? initial.view<const float>(*s0)
                                                                       : View<const float, 4>{},
                                                                    dsT ? d_final.view<const float>(*dsT)
                                                                        : View<const float, 4>{},
                                                                    ds0 ? d_initial.view<float>(*ds0)
                                                                        : View<float, 4>{}} {}
  void to_host(Tensor* ds0) const {
    if (ds0) d_initial.to_host(*ds0);
  }
};

// The family files' entry points (each in its own translation unit, so they compile in parallel).
GatedOps* cuda_gated_ops();
CosformerOps* cuda_cosformer_ops();  // cosformer_backend_cuda.cu
ToeplitzOps* cuda_toeplitz_ops();    // toeplitz_backend_cuda.cu
Probe* cuda_probe();                 // probe_cuda.cu

}  // namespace lcsm::test
