// The CUDA runner's gated calls: device copies of the host tensors (the gate too, fp32) viewed as
// the operators' views.
#include <type_traits>

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

  bool has_backward(GateKind) const override { return true; }

  void backward(const GatedSpec& spec, const Tensor& gate, const Tensor& q, const Tensor& k, const Tensor& v,
                const Tensor& d_o, const Tensor* s0, const Tensor* dsT, const GatedBackwardOut& out,
                const Offsets* cu) override {
    const DeviceBuffer dgate(gate);
    with_op(spec, dgate, gate, q.dtype(), [&](const auto& op, auto tag) {
      using T = decltype(tag);
      {
        const DeviceBuffer dq_in(q), dk_in(k), dv_in(v), ddo(d_o), dq(*out.dq), dk(*out.dk), dv(*out.dv);
        const DeviceStateGrads states(s0, dsT, out.d_initial_state);
        const DeviceBuffer dg = out.d_log_gate ? DeviceBuffer(*out.d_log_gate) : DeviceBuffer();
        const DeviceOffsets offsets(cu);
        const auto dgv = gate_gradient_view(op, dg, out.d_log_gate);
        const auto qv = dq_in.view<const T>(q), vv = dv_in.view<const T>(v);
        const DeviceBuffer workspace(cuda::backward_workspace_bytes<T>(op, qv, vv, states.views, dgv, offsets.view));
        lcsm::backward<T>(test_device(workspace), op, qv, dk_in.view<const T>(k), vv, ddo.view<const T>(d_o),
                          dq.view<T>(*out.dq), dk.view<T>(*out.dk), dv.view<T>(*out.dv), states.views, dgv,
                          offsets.view);
        LCSM_CUDA_CHECK(cudaDeviceSynchronize());
        dq.to_host(*out.dq);
        dk.to_host(*out.dk);
        dv.to_host(*out.dv);
        states.to_host(out.d_initial_state);
        if (out.d_log_gate) dg.to_host(*out.d_log_gate);
      }
    });
  }

 private:
  // The gate gradient's device view in the shape of op.log_gate (absent when not asked for).
  template <class T>
  static View<float, 3> gate_gradient_view(const ScalarGatedAttention<T>&, const DeviceBuffer& dg, const Tensor* t) {
    return t ? drop_unit_key(dg.view<float>(*t)) : View<float, 3>{};
  }
  template <class T>
  static View<float, 4> gate_gradient_view(const VectorGatedAttention<T>&, const DeviceBuffer& dg, const Tensor* t) {
    return t ? dg.view<float>(*t) : View<float, 4>{};
  }

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
