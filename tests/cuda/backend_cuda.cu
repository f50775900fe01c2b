// The shared suite's CUDA runner: lcsm::cuda::Device over device copies of the host tensors, for
// float, half and bfloat16 inputs (fp32 states).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/device_buffer.cuh"
#include "lcsm/cuda.cuh"
#include "support/backend.hpp"

namespace lcsm::test {
namespace {

template <class F>
void dispatch(Dtype d, F&& f) {
  switch (d) {
    case Dtype::f32: f(float{}); return;
    case Dtype::f16: f(__half{}); return;
    case Dtype::bf16: f(__nv_bfloat16{}); return;
    default: throw Error(std::string("cuda backend: unsupported dtype ") + name(d));
  }
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

class CudaBackend final : public Backend {
 public:
  std::string name() const override { return "cuda"; }
  std::vector<Dtype> dtypes() const override { return {Dtype::bf16, Dtype::f16, Dtype::f32}; }
  bool honours_chunk() const override { return false; }
  bool has_backward() const override { return false; }

  void lightning_forward(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                         const Tensor* s0, Tensor* sT, const Offsets* cu) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceBuffer dq(q), dk(k), dv(v), d_o(o);
      const DeviceBuffer ds0 = s0 ? DeviceBuffer(*s0) : DeviceBuffer();
      const DeviceBuffer dsT = sT ? DeviceBuffer(*sT) : DeviceBuffer();
      const DeviceOffsets offsets(cu);
      const auto qv = dq.view<const T>(q), vv = dv.view<const T>(v);
      const DeviceBuffer workspace(cuda::forward_workspace_bytes<T>(op, qv, vv, offsets.view));
      cuda::Device dev{nullptr, {workspace.get(), workspace.bytes()}};
      lcsm::forward<T>(
          dev, op, qv, dk.view<const T>(k), vv, d_o.view<T>(o),
          {s0 ? ds0.view<const float>(*s0) : View<const float, 4>{}, sT ? dsT.view<float>(*sT) : View<float, 4>{}},
          offsets.view);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      d_o.to_host(o);
      if (sT) dsT.to_host(*sT);
    });
  }

  void lightning_step(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                      Tensor& state) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceBuffer dq(q), dk(k), dv(v), d_o(o), ds(state);
      lcsm::step<T>(cuda::Device{}, op, dq.view<const T>(q), dk.view<const T>(k), dv.view<const T>(v), d_o.view<T>(o),
                    ds.view<float>(state));
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      d_o.to_host(o);
      ds.to_host(state);
    });
  }

  void lightning_backward(const LightningAttention&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor*, const Tensor*, const LightningBackwardOut&, const Offsets*) override {
    throw Error("cuda backend: lightning backward is not implemented yet");
  }
};

}  // namespace

Backend& backend() {
  static CudaBackend instance;
  return instance;
}

}  // namespace lcsm::test
