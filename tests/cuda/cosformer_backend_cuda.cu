// The CUDA runner's cosFormer calls: device copies of the host tensors and of op.positions (device
// memory on CUDA), with the workspace each call asks for. No backward on CUDA yet.
#include <stdexcept>

#include "cuda/backend_cuda.cuh"
#include "support/cosformer_backend.hpp"

namespace lcsm::test {
namespace {

// The descriptor with its positions copied to the device (kept alive by `buffer`).
struct DeviceCosformer {
  DeviceBuffer buffer;
  CosFormerAttention op;
  explicit DeviceCosformer(const CosFormerAttention& host) : op(host) {
    if (host.positions.absent()) return;
    const index_t n = host.positions.size(0);
    std::vector<index_t> copy(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) copy[static_cast<std::size_t>(i)] = host.positions(i);
    buffer = DeviceBuffer(copy.data(), copy.size() * sizeof(index_t));
    op.positions = View<const index_t, 1>(static_cast<const index_t*>(buffer.get()), {n}, {1});
  }
};

class CudaCosformerOps final : public CosformerOps {
 public:
  void forward(const CosFormerAttention& host_op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
               const Tensor* s0, Tensor* sT, const Offsets* cu) override {
    dispatch_cuda(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceCosformer d(host_op);
      const DeviceBuffer dq(q), dk(k), dv(v), d_o(o);
      const DeviceBuffer ds0 = s0 ? DeviceBuffer(*s0) : DeviceBuffer();
      const DeviceBuffer dsT = sT ? DeviceBuffer(*sT) : DeviceBuffer();
      const DeviceOffsets offsets(cu);
      const auto qv = dq.view<const T>(q), vv = dv.view<const T>(v);
      const DeviceBuffer workspace(cuda::forward_workspace_bytes<T>(d.op, qv, vv, offsets.view));
      lcsm::forward<T>(
          test_device(workspace), d.op, qv, dk.view<const T>(k), vv, d_o.view<T>(o),
          {s0 ? ds0.view<const float>(*s0) : View<const float, 4>{}, sT ? dsT.view<float>(*sT) : View<float, 4>{}},
          offsets.view);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      d_o.to_host(o);
      if (sT) dsT.to_host(*sT);
    });
  }

  void step(const CosFormerAttention& host_op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
            Tensor& state) override {
    dispatch_cuda(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceCosformer d(host_op);
      const DeviceBuffer dq(q), dk(k), dv(v), d_o(o), ds(state);
      lcsm::step<T>(test_device(DeviceBuffer()), d.op, dq.view<const T>(q), dk.view<const T>(k), dv.view<const T>(v),
                    d_o.view<T>(o), ds.view<float>(state));
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      d_o.to_host(o);
      ds.to_host(state);
    });
  }

  bool has_backward() const override { return false; }
  void backward(const CosFormerAttention&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*,
                const Tensor*, const CosformerBackwardOut&, const Offsets*) override {
    throw Error("cuda backend: no cosFormer backward yet");
  }
};

}  // namespace

CosformerOps* cuda_cosformer_ops() {
  static CudaCosformerOps ops;
  return &ops;
}

}  // namespace lcsm::test
