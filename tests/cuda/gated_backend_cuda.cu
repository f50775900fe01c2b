// The CUDA runner's gated calls: device copies of the host tensors (the gate too, fp32) viewed as
// the operators' views.
#include "cuda/backend_cuda.cuh"
#include "support/gated_backend.hpp"

namespace lcsm::test {
namespace {

// [B, T, H, 1] as [B, T, H].
template <class E>
View<E, 3> drop_unit_key(const View<E, 4>& g) {
  return {g.data(), {g.size(0), g.size(1), g.size(2)}, {g.stride(0), g.stride(1), g.stride(2)}};
}

class CudaGatedOps final : public GatedOps {
 public:
  void forward(const GatedSpec& spec, const Tensor& gate, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
               const Tensor* s0, Tensor* sT, const Offsets* cu) override {
    const DeviceBuffer dg(gate);
    with_op(spec, dg, gate, q.dtype(), [&](const auto& op, auto tag) {
      using T = decltype(tag);
      const DeviceBuffer dq(q), dk(k), dv(v), d_o(o);
      const DeviceBuffer ds0 = s0 ? DeviceBuffer(*s0) : DeviceBuffer();
      const DeviceBuffer dsT = sT ? DeviceBuffer(*sT) : DeviceBuffer();
      const DeviceOffsets offsets(cu);
      const auto qv = dq.view<const T>(q), vv = dv.view<const T>(v);
      const DeviceBuffer workspace(cuda::forward_workspace_bytes<T>(op, qv, vv, offsets.view));
      lcsm::forward<T>(
          test_device(workspace), op, qv, dk.view<const T>(k), vv, d_o.view<T>(o),
          {s0 ? ds0.view<const float>(*s0) : View<const float, 4>{}, sT ? dsT.view<float>(*sT) : View<float, 4>{}},
          offsets.view);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      d_o.to_host(o);
      if (sT) dsT.to_host(*sT);
    });
  }

  void step(const GatedSpec& spec, const Tensor& gate, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
            Tensor& state) override {
    const DeviceBuffer dg(gate);
    with_op(spec, dg, gate, q.dtype(), [&](const auto& op, auto tag) {
      using T = decltype(tag);
      const DeviceBuffer dq(q), dk(k), dv(v), d_o(o), ds(state);
      lcsm::step<T>(test_device(DeviceBuffer()), op, dq.view<const T>(q), dk.view<const T>(k), dv.view<const T>(v),
                    d_o.view<T>(o), ds.view<float>(state));
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      d_o.to_host(o);
      ds.to_host(state);
    });
  }

  void backward(const GatedSpec&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                const Tensor*, const Tensor*, const GatedBackwardOut&, const Offsets*) override {
    throw Error("cuda backend: gated backward is not implemented yet");
  }

 private:
  // f(op, T{}) with the descriptor of spec.kind over the device copy of the gate.
  template <class F>
  static void with_op(const GatedSpec& spec, const DeviceBuffer& dg, const Tensor& gate, Dtype d, F&& f) {
    dispatch_cuda(d, [&](auto tag) {
      using T = decltype(tag);
      const View<const float, 4> g = dg.view<const float>(gate);
      if (spec.kind == GateKind::scalar) {
        ScalarGatedAttention<T> op;
        op.log_gate = drop_unit_key(g);
        op.scale = spec.scale;
        op.precision = spec.precision;
        f(op, tag);
      } else {
        VectorGatedAttention<T> op;
        op.log_gate = g;
        op.scale = spec.scale;
        op.precision = spec.precision;
        f(op, tag);
      }
    });
  }
};

}  // namespace

GatedOps* cuda_gated_ops() {
  static CudaGatedOps ops;
  return &ops;
}

}  // namespace lcsm::test
