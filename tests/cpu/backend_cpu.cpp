// The shared suite's CPU runner: lcsm::cpu::Device over host tensors, float and double.
#include <cstdlib>

#include "lcsm/lcsm.hpp"
#include "support/backend.hpp"

namespace lcsm::test {

CosformerOps* cpu_cosformer_ops(const cpu::Device& device);  // cosformer_backend_cpu.cpp

GatedOps* cpu_gated_ops(const cpu::Device& device);  // gated_backend_cpu.cpp

ToeplitzOps* cpu_toeplitz_ops(const cpu::Device& device);  // toeplitz_backend_cpu.cpp

Probe* cpu_probe(const cpu::Device& device);  // probe_cpu.cpp

namespace {

template <class S>
View<const S, 4> state_in(const Tensor* t) {
  return t ? t->view<S>() : View<const S, 4>{};
}
template <class S>
View<S, 4> state_out(Tensor* t) {
  return t ? t->view<S>() : View<S, 4>{};
}

class CpuBackend final : public Backend {
 public:
  CpuBackend() {
    const char* env = std::getenv("LCSM_TEST_THREADS");
    device_.threads = env ? std::atoi(env) : 2;
  }
  std::string name() const override { return "cpu"; }
  std::vector<Dtype> dtypes() const override { return {Dtype::f32, Dtype::f64}; }
  bool honours_chunk() const override { return true; }
  bool has_backward() const override { return true; }
  CosformerOps* cosformer() override { return cpu_cosformer_ops(device_); }
  GatedOps* gated() override { return cpu_gated_ops(device_); }
  ToeplitzOps* toeplitz() override { return cpu_toeplitz_ops(device_); }
  Probe* probe() override { return cpu_probe(device_); }

  void lightning_forward(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                         const Tensor* s0, Tensor* sT, const Offsets* cu) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      lcsm::forward<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), o.view<T>(),
                       {state_in<T>(s0), state_out<T>(sT)}, cu ? cu->view() : CuSeqlens{});
    });
  }
  void lightning_step(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                      Tensor& state) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      lcsm::step<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), o.view<T>(), state.view<T>());
    });
  }
  void lightning_backward(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& d_o, const Tensor* s0, const Tensor* dsT, const LightningBackwardOut& out,
                          const Offsets* cu) override {
    dispatch(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      std::vector<T> dg(q.size(2));
      lcsm::backward<T>(
          device_, op, q.view<T>(), k.view<T>(), v.view<T>(), d_o.view<T>(), out.dq->view<T>(), out.dk->view<T>(),
          out.dv->view<T>(), {state_in<T>(s0), state_in<T>(dsT), state_out<T>(out.d_initial_state)},
          out.d_log_decay ? lcsm::view(dg.data(), {q.size(2)}) : View<T, 1>{}, cu ? cu->view() : CuSeqlens{});
      if (out.d_log_decay) out.d_log_decay->assign(dg.begin(), dg.end());
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

Backend& backend() {
  static CpuBackend instance;
  return instance;
}

}  // namespace lcsm::test
