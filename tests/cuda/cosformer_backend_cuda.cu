// The CUDA runner's cosFormer calls: device copies of the host tensors and of op.positions (device
// memory on CUDA), with the workspace each call asks for.
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

  void backward(const CosFormerAttention& host_op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& d_o,
                const Tensor* s0, const Tensor* dsT, const CosformerBackwardOut& out, const Offsets* cu) override {
    dispatch_cuda(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceCosformer d(host_op);
      const DeviceBuffer dq_in(q), dk_in(k), dv_in(v), ddo(d_o), dq(*out.dq), dk(*out.dk), dv(*out.dv);
      const DeviceStateGrads states(s0, dsT, out.d_initial_state);
      const DeviceOffsets offsets(cu);
      const auto qv = dq_in.view<const T>(q), vv = dv_in.view<const T>(v);
      const DeviceBuffer workspace(cuda::backward_workspace_bytes<T>(d.op, qv, vv, states.views, offsets.view));
      lcsm::backward<T>(test_device(workspace), d.op, qv, dk_in.view<const T>(k), vv, ddo.view<const T>(d_o),
                        dq.view<T>(*out.dq), dk.view<T>(*out.dk), dv.view<T>(*out.dv), states.views, offsets.view);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      dq.to_host(*out.dq);
      dk.to_host(*out.dk);
      dv.to_host(*out.dv);
      states.to_host(out.d_initial_state);
    });
  }
};

}  // namespace

CosformerOps* cuda_cosformer_ops() {
  static CudaCosformerOps ops;
  return &ops;
}

}  // namespace lcsm::test
