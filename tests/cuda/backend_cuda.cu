// The shared suite's CUDA runner: lcsm::cuda::Device over device copies of the host tensors, for
// float, half and bfloat16 inputs (fp32 states). Lightning attention here; the other families in
// their own files (gated_backend_cuda.cu).
#include "cuda/backend_cuda.cuh"

namespace lcsm::test {
namespace {

class CudaBackend final : public Backend {
 public:
  std::string name() const override {
    return test_kernels() == cuda::Kernels::portable ? "cuda (portable kernels)" : "cuda";
  }
  std::vector<Dtype> dtypes() const override { return test_dtypes(); }
  bool honours_chunk() const override { return false; }
  bool has_backward() const override { return true; }
  double product_error() const override { return 1.0 / 32768; }  // bf16 pieces: 2^-15 through a state

  void lightning_forward(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                         const Tensor* s0, Tensor* sT, const Offsets* cu) override {
    dispatch_cuda(q.dtype(), [&](auto tag) {
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

  void lightning_step(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                      Tensor& state) override {
    dispatch_cuda(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceBuffer dq(q), dk(k), dv(v), d_o(o), ds(state);
      lcsm::step<T>(test_device(DeviceBuffer()), op, dq.view<const T>(q), dk.view<const T>(k), dv.view<const T>(v),
                    d_o.view<T>(o), ds.view<float>(state));
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      d_o.to_host(o);
      ds.to_host(state);
    });
  }

  void lightning_backward(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& d_o, const Tensor* s0, const Tensor* dsT, const LightningBackwardOut& out,
                          const Offsets* cu) override {
    dispatch_cuda(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceBuffer dq_in(q), dk_in(k), dv_in(v), ddo(d_o), dq(*out.dq), dk(*out.dk), dv(*out.dv);
      const DeviceStateGrads states(s0, dsT, out.d_initial_state);
      const index_t H = q.shape()[2];
      const DeviceBuffer dg(out.d_log_decay ? H * sizeof(float) : 0);
      const DeviceOffsets offsets(cu);
      const View<float, 1> dgv =
          out.d_log_decay ? View<float, 1>(static_cast<float*>(dg.get()), {H}, {1}) : View<float, 1>{};
      const auto qv = dq_in.view<const T>(q), vv = dv_in.view<const T>(v);
      const DeviceBuffer workspace(cuda::backward_workspace_bytes<T>(op, qv, vv, states.views, dgv, offsets.view));
      lcsm::backward<T>(test_device(workspace), op, qv, dk_in.view<const T>(k), vv, ddo.view<const T>(d_o),
                        dq.view<T>(*out.dq), dk.view<T>(*out.dk), dv.view<T>(*out.dv), states.views, dgv, offsets.view);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      dq.to_host(*out.dq);
      dk.to_host(*out.dk);
      dv.to_host(*out.dv);
      states.to_host(out.d_initial_state);
      if (out.d_log_decay) {
        std::vector<float> host(static_cast<std::size_t>(H));
        if (H > 0) LCSM_CUDA_CHECK(cudaMemcpy(host.data(), dg.get(), H * sizeof(float), cudaMemcpyDeviceToHost));
        out.d_log_decay->assign(host.begin(), host.end());
      }
    });
  }

  GatedOps* gated() override { return cuda_gated_ops(); }
  CosformerOps* cosformer() override { return cuda_cosformer_ops(); }
  ToeplitzOps* toeplitz() override { return cuda_toeplitz_ops(); }
  Probe* probe() override { return cuda_probe(); }
};

}  // namespace

Backend& backend() {
  static CudaBackend instance;
  return instance;
}

}  // namespace lcsm::test
