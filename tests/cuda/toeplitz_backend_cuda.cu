// The CUDA runner's Toeplitz calls: device copies of the host tensors, viewed as [B, n, C] and
// [C, count], with the workspace each call asks for.
#include "cuda/backend_cuda.cuh"
#include "support/toeplitz_backend.hpp"

namespace lcsm::test {
namespace {

template <class T>
View<T, 3> sequence_view(const DeviceBuffer& d, const Tensor& like) {
  return {static_cast<T*>(d.get()),
          {like.size(0), like.size(1), like.size(2)},
          {like.strides()[0], like.strides()[1], like.strides()[2]}};
}
template <class T>
View<T, 2> coefficient_view(const DeviceBuffer& d, const Tensor& like) {
  return {static_cast<T*>(d.get()), {like.size(0), like.size(1)}, {like.strides()[0], like.strides()[1]}};
}

template <class T>
ToeplitzConvolution<T> make_op(const ToeplitzSpec& spec, const DeviceBuffer& a, const Tensor& like) {
  ToeplitzConvolution<T> op;
  op.coefficients = coefficient_view<const T>(a, like);
  op.causal = spec.causal;
  op.path = static_cast<typename ToeplitzConvolution<T>::Path>(static_cast<int>(spec.path));
  op.direct_max_length = spec.direct_max_length;
  return op;
}

class CudaToeplitzOps final : public ToeplitzOps {
 public:
  void forward(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x, Tensor& y,
               const Offsets* cu) override {
    dispatch_cuda(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceBuffer da(coefficients), dx(x), dy(y);
      const DeviceOffsets offsets(cu);
      const auto op = make_op<T>(spec, da, coefficients);
      const auto xv = sequence_view<const T>(dx, x);
      // The fused FFT convolution at every length it takes (automatic runs it at 2^16 <= L <= 2^21
      // only), cuFFT's at every length in the portable run.
      const cuda::Kernels kernels =
          test_kernels() == cuda::Kernels::portable ? cuda::Kernels::portable : cuda::Kernels::fused_fft;
      const DeviceBuffer workspace(cuda::forward_workspace_bytes<T>(op, xv, offsets.view, kernels));
      cuda::Device device = test_device(workspace);
      device.kernels = kernels;
      lcsm::forward<T>(device, op, xv, sequence_view<T>(dy, y), offsets.view);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      dy.to_host(y);
    });
  }

  void backward(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x, const Tensor& dy, Tensor* dx,
                Tensor* da, const Offsets* cu) override {
    dispatch_cuda(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceBuffer d_a(coefficients), d_x(x), d_dy(dy);
      const DeviceBuffer d_dx = dx ? DeviceBuffer(*dx) : DeviceBuffer();
      const DeviceBuffer d_da = da ? DeviceBuffer(*da) : DeviceBuffer();
      const DeviceOffsets offsets(cu);
      const auto op = make_op<T>(spec, d_a, coefficients);
      const auto xv = sequence_view<const T>(d_x, x);
      const DeviceBuffer workspace(
          cuda::backward_workspace_bytes<T>(op, xv, dx != nullptr, da != nullptr, offsets.view));
      lcsm::backward<T>(test_device(workspace), op, xv, sequence_view<const T>(d_dy, dy),
                        dx ? sequence_view<T>(d_dx, *dx) : View<T, 3>{},
                        da ? coefficient_view<T>(d_da, *da) : View<T, 2>{}, offsets.view);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      if (dx) d_dx.to_host(*dx);
      if (da) d_da.to_host(*da);
    });
  }

  void step(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x_t, Tensor& y_t, Tensor& history,
            index_t& position) override {
    dispatch_cuda(x_t.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const DeviceBuffer da(coefficients), dx(x_t), dy(y_t), dh(history);
      ToeplitzHistory<T> h{sequence_view<T>(dh, history), position};
      lcsm::step<T>(test_device(DeviceBuffer()), make_op<T>(spec, da, coefficients), sequence_view<const T>(dx, x_t),
                    sequence_view<T>(dy, y_t), h);
      LCSM_CUDA_CHECK(cudaDeviceSynchronize());
      dy.to_host(y_t);
      dh.to_host(history);
      position = h.position;
    });
  }
};

}  // namespace

ToeplitzOps* cuda_toeplitz_ops() {
  static CudaToeplitzOps ops;
  return &ops;
}

}  // namespace lcsm::test
