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
  bool has_backward() const override { return false; }

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

  void lightning_backward(const LightningAttention&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor*, const Tensor*, const LightningBackwardOut&, const Offsets*) override {
    throw Error("cuda backend: lightning backward is not implemented yet");
  }

  GatedOps* gated() override { return cuda_gated_ops(); }
  ToeplitzOps* toeplitz() override { return cuda_toeplitz_ops(); }
  Probe* probe() override { return cuda_probe(); }
};

}  // namespace

Backend& backend() {
  static CudaBackend instance;
  return instance;
}

}  // namespace lcsm::test
