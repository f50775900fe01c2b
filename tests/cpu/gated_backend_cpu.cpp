// The CPU runner's gated calls: host tensors viewed as the operators' views.
#include "lcsm/lcsm.hpp"
#include "support/gated_backend.hpp"

namespace lcsm::test {
namespace {

template <class S>
View<const S, 4> state_in(const Tensor* t) {
  return t ? t->view<S>() : View<const S, 4>{};
}
template <class S>
View<S, 4> state_out(Tensor* t) {
  return t ? t->view<S>() : View<S, 4>{};
}
// [B, T, H, 1] as [B, T, H].
template <class E>
View<E, 3> drop_unit_key(const View<E, 4>& g) {
  return {g.data(), {g.size(0), g.size(1), g.size(2)}, {g.stride(0), g.stride(1), g.stride(2)}};
}

template <class T>
ScalarGatedAttention<T> scalar_op(const GatedSpec& spec, const Tensor& gate) {
  ScalarGatedAttention<T> op;
  op.log_gate = drop_unit_key(gate.view<state_t<T>>());
  op.scale = spec.scale;
  op.chunk = spec.chunk;
  return op;
}
template <class T>
VectorGatedAttention<T> vector_op(const GatedSpec& spec, const Tensor& gate) {
  VectorGatedAttention<T> op;
  op.log_gate = gate.view<state_t<T>>();
  op.scale = spec.scale;
  op.chunk = spec.chunk;
  op.sub_chunk = spec.sub_chunk;
  return op;
}

class CpuGatedOps final : public GatedOps {
 public:
  explicit CpuGatedOps(cpu::Device device) : device_(device) {}

  void forward(const GatedSpec& spec, const Tensor& gate, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
               const Tensor* s0, Tensor* sT, const Offsets* cu) override {
    with_op(spec, gate, q.dtype(), [&](const auto& op, auto tag) {
      using T = decltype(tag);
      lcsm::forward<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), o.view<T>(),
                       {state_in<state_t<T>>(s0), state_out<state_t<T>>(sT)}, cu ? cu->view() : CuSeqlens{});
    });
  }
  void step(const GatedSpec& spec, const Tensor& gate, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
            Tensor& state) override {
    with_op(spec, gate, q.dtype(), [&](const auto& op, auto tag) {
      using T = decltype(tag);
      lcsm::step<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), o.view<T>(), state.view<state_t<T>>());
    });
  }
  void backward(const GatedSpec& spec, const Tensor& gate, const Tensor& q, const Tensor& k, const Tensor& v,
                const Tensor& d_o, const Tensor* s0, const Tensor* dsT, const GatedBackwardOut& out,
                const Offsets* cu) override {
    with_op(spec, gate, q.dtype(), [&](const auto& op, auto tag) {
      using T = decltype(tag);
      using S = state_t<T>;
      const StateGrads<S> states{state_in<S>(s0), state_in<S>(dsT), state_out<S>(out.d_initial_state)};
      const CuSeqlens cs = cu ? cu->view() : CuSeqlens{};
      if constexpr (std::is_same_v<std::decay_t<decltype(op)>, ScalarGatedAttention<T>>)
        lcsm::backward<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), d_o.view<T>(), out.dq->view<T>(),
                          out.dk->view<T>(), out.dv->view<T>(), states,
                          out.d_log_gate ? drop_unit_key(out.d_log_gate->view<S>()) : View<S, 3>{}, cs);
      else
        lcsm::backward<T>(device_, op, q.view<T>(), k.view<T>(), v.view<T>(), d_o.view<T>(), out.dq->view<T>(),
                          out.dk->view<T>(), out.dv->view<T>(), states,
                          out.d_log_gate ? out.d_log_gate->view<S>() : View<S, 4>{}, cs);
    });
  }

 private:
  // f(op, T{}) with the descriptor of spec.kind for the element type d.
  template <class F>
  static void with_op(const GatedSpec& spec, const Tensor& gate, Dtype d, F&& f) {
    auto typed = [&](auto tag) {
      using T = decltype(tag);
      if (spec.kind == GateKind::scalar) f(scalar_op<T>(spec, gate), tag);
      else f(vector_op<T>(spec, gate), tag);
    };
    if (d == Dtype::f32) typed(float{});
    else if (d == Dtype::f64) typed(double{});
    else throw Error(std::string("cpu backend: unsupported dtype ") + test::name(d));
  }
  cpu::Device device_;
};

}  // namespace

GatedOps* cpu_gated_ops(const cpu::Device& device) {
  static CpuGatedOps ops(device);
  return &ops;
}

}  // namespace lcsm::test
