// The CPU runner's cosFormer calls: lcsm::cpu::Device over host tensors, float and double.
#include <string>

#include "lcsm/lcsm.hpp"
#include "support/cosformer_backend.hpp"

namespace lcsm::test {
namespace {

class CpuCosformerOps final : public CosformerOps {
 public:
  explicit CpuCosformerOps(const cpu::Device& device) : device_(device) {}
  void forward(const CosFormerAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
               const Tensor* s0, Tensor* sT, const Offsets* cu) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      lcsm::forward<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), o.view<T>(),
                       {s0 ? s0->view<T>() : View<const T, 4>{}, sT ? sT->view<T>() : View<T, 4>{}},
                       cu ? cu->view() : CuSeqlens{});
    });
  }
  void step(const CosFormerAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
            Tensor& state) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      lcsm::step<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), o.view<T>(), state.view<T>());
    });
  }
  void backward(const CosFormerAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& d_o,
                const Tensor* s0, const Tensor* dsT, const CosformerBackwardOut& out, const Offsets* cu) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      lcsm::backward<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), d_o.view<T>(), out.dq->view<T>(),
                        out.dk->view<T>(), out.dv->view<T>(),
                        {s0 ? s0->view<T>() : View<const T, 4>{}, dsT ? dsT->view<T>() : View<const T, 4>{},
                         out.d_initial_state ? out.d_initial_state->view<T>() : View<T, 4>{}},
                        cu ? cu->view() : CuSeqlens{});
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

// The runner's device (LCSM_TEST_THREADS), as CpuBackend holds it.
CosformerOps* cpu_cosformer_ops(const cpu::Device& device) {
  static CpuCosformerOps instance(device);
  return &instance;
}

}  // namespace lcsm::test
