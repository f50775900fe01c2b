// The CPU runner's Toeplitz calls: host tensors viewed as [B, n, C] and [C, count].
#include "lcsm/lcsm.hpp"
#include "support/toeplitz_backend.hpp"

namespace lcsm::test {
namespace {

template <class T, class Tn>
auto sequence_view(Tn& t) {
  using E = std::conditional_t<std::is_const_v<Tn>, const T, T>;
  return View<E, 3>(static_cast<E*>(t.data()), {t.size(0), t.size(1), t.size(2)},
                    {t.strides()[0], t.strides()[1], t.strides()[2]});
}
template <class T, class Tn>
auto coefficient_view(Tn& t) {
  using E = std::conditional_t<std::is_const_v<Tn>, const T, T>;
  return View<E, 2>(static_cast<E*>(t.data()), {t.size(0), t.size(1)}, {t.strides()[0], t.strides()[1]});
}

template <class T>
ToeplitzConvolution<T> make_op(const ToeplitzSpec& spec, const Tensor& coefficients) {
  ToeplitzConvolution<T> op;
  op.coefficients = coefficient_view<T>(coefficients);
  op.causal = spec.causal;
  op.path = static_cast<typename ToeplitzConvolution<T>::Path>(static_cast<int>(spec.path));
  op.direct_max_length = spec.direct_max_length;
  return op;
}

class CpuToeplitzOps final : public ToeplitzOps {
 public:
  explicit CpuToeplitzOps(cpu::Device device) : device_(device) {}

  void forward(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x, Tensor& y,
               const Offsets* cu) override {
    dispatch(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      lcsm::forward<T>(device_, make_op<T>(spec, coefficients), sequence_view<T>(x), sequence_view<T>(y),
                       cu ? cu->view() : CuSeqlens{});
    });
  }
  void backward(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x, const Tensor& dy, Tensor* dx,
                Tensor* da, const Offsets* cu) override {
    dispatch(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      lcsm::backward<T>(device_, make_op<T>(spec, coefficients), sequence_view<T>(x), sequence_view<T>(dy),
                        dx ? sequence_view<T>(*dx) : View<T, 3>{}, da ? coefficient_view<T>(*da) : View<T, 2>{},
                        cu ? cu->view() : CuSeqlens{});
    });
  }
  void step(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x_t, Tensor& y_t, Tensor& history,
            index_t& position) override {
    dispatch(x_t.dtype(), [&](auto tag) {
      using T = decltype(tag);
      ToeplitzHistory<T> h{sequence_view<T>(history), position};
      lcsm::step<T>(device_, make_op<T>(spec, coefficients), sequence_view<T>(x_t), sequence_view<T>(y_t), h);
      position = h.position;
    });
  }

 private:
  template <class F>
  static void dispatch(Dtype d, F&& f) {
    if (d == Dtype::f32) f(float{});
    else if (d == Dtype::f64) f(double{});
    else throw Error(std::string("cpu backend: unsupported dtype ") + test::name(d));
  }
  cpu::Device device_;
};

}  // namespace

ToeplitzOps* cpu_toeplitz_ops(const cpu::Device& device) {
  static CpuToeplitzOps instance(device);
  return &instance;
}

}  // namespace lcsm::test
