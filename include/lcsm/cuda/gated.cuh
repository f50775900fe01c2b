// The gated recurrences on CUDA: ScalarGatedAttention (a gate per token and head: Mamba-2, simple
// GLA) and VectorGatedAttention (a gate per token, head and key: GLA, HGRN2), forward and decode;
// the scalar gate's backward. Include from a .cu file.
//
//   lcsm::ScalarGatedAttention<__nv_bfloat16> op;
//   op.log_gate = lcsm::view(g, {B, T, H});                 // fp32 log-gates <= 0, device memory
//   lcsm::cuda::Device dev{stream, {workspace_ptr, workspace_bytes}};
//   lcsm::forward<__nv_bfloat16>(dev, op, q, k, v, o, {initial_state, final_state}, cu_seqlens);
//   lcsm::step<__nv_bfloat16>(dev, op, q1, k1, v1, o1, state);  // op.log_gate [B, n, H] for the n tokens
//
// As lightning attention (lightning.cuh): device memory, the caller's stream and workspace
// (lcsm::cuda::forward_workspace_bytes), cu_seqlens contents unread. The gate's values are not
// read on the host either (that would need a synchronisation): they must be finite and <= 0, as the
// CPU backend checks; every exponential the kernels form is then of a non-positive number.
// The backward is three passes of the engine (chunked/backward.cuh) and needs workspace
// (lcsm::cuda::backward_workspace_bytes).
#pragma once

#include "lcsm/cuda/chunked/backward.cuh"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/ops/gated.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cuda {
namespace detail {

template <class Op>
struct GateDecay;
template <class T>
struct GateDecay<ScalarGatedAttention<T>> {
  static constexpr DecayKind value = DecayKind::token;
};
template <class T>
struct GateDecay<VectorGatedAttention<T>> {
  static constexpr DecayKind value = DecayKind::key;
};
template <class Op>
constexpr DecayKind decay_kind_of = GateDecay<Op>::value;

template <class Op, class T>
void gated_forward(const char* where, const Device& device, const Op& op, const View<const T, 4>& q,
                   const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                   const StateIO<float>& state, const CuSeqlens& cu_seqlens) {
  static_assert(is_cuda_input_v<T>, "CUDA gated attention takes float, __half or __nv_bfloat16");
  constexpr DecayKind kDecay = decay_kind_of<Op>;
  lcsm::detail::Operands ops(where);
  ops.in("op.log_gate", op.log_gate);
  const auto shape = check_forward_call(where, q, k, v, o, state, cu_seqlens, ops);
  op.check_layout(where, shape.batch, shape.time, shape.heads, shape.key_dim);
  // Nothing to do, or no tokens and no state: nothing to plan (a batch of any size, bounded by no
  // view's memory, must not become a grid).
  if (shape.batch == 0 || shape.sequences == 0 || (shape.time == 0 && state.final.absent())) return;

  const auto plan = plan_forward<kDecay>(shape, cu_seqlens.present());
  check_workspace(where, device, plan);
  auto params = make_params(q, k, v, o, op.scale_for(shape.key_dim), shape);
  set_states(params, state, cu_seqlens);
  set_gate(params, op.log_gate);
  run_forward<T, kDecay>(params, plan, device, op.precision);
}

template <class Op, class T>
void gated_step(const char* where, const Device& device, const Op& op, const View<const T, 4>& q,
                const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                const View<float, 4>& state) {
  static_assert(is_cuda_input_v<T>, "CUDA gated attention takes float, __half or __nv_bfloat16");
  lcsm::detail::Operands ops(where);
  ops.in("op.log_gate", op.log_gate);
  const auto shape = lcsm::detail::check_step(where, q, k, v, o, state, ops);
  op.check_layout(where, shape.batch, shape.time, shape.heads, shape.key_dim);
  check_step_dims(where, shape);
  if (shape.batch == 0 || shape.time == 0) return;

  auto params = make_params(q, k, v, o, op.scale_for(shape.key_dim), shape);
  set_gate(params, op.log_gate);
  run_step<T, decay_kind_of<Op>>(params, state, device.stream);
}

template <class Op, class T, class DG>
void gated_backward(const char* where, const Device& device, const Op& op, const View<const T, 4>& q,
                    const View<const T, 4>& k, const View<const T, 4>& v, const View<const T, 4>& d_o,
                    const View<T, 4>& dq, const View<T, 4>& dk, const View<T, 4>& dv, const StateGrads<float>& states,
                    const DG& d_log_gate, const CuSeqlens& cu) {
  static_assert(is_cuda_input_v<T>, "CUDA gated attention takes float, __half or __nv_bfloat16");
  constexpr DecayKind kDecay = decay_kind_of<Op>;
  lcsm::detail::Operands ops(where);
  ops.in("op.log_gate", op.log_gate).out("d_log_gate", d_log_gate);
  const auto shape = check_backward_call(where, q, k, v, d_o, dq, dk, dv, states, cu, ops);
  op.check_layout(where, shape.batch, shape.time, shape.heads, shape.key_dim);
  if (d_log_gate.present())
    lcsm::detail::check_shape(
        where, "d_log_gate", d_log_gate, op.log_gate.shape(),
        DG::rank == 3 ? "[B, T, H], the shape of op.log_gate" : "[B, T, H, K], the shape of op.log_gate");
  if (shape.batch == 0 || shape.sequences == 0 || (shape.time == 0 && states.d_initial.absent())) return;
  const auto plan = plan_backward<kDecay>(shape, cu.present(), states.d_final.present(), d_log_gate.present(),
                                          std::is_same_v<T, float>, op.scale_for(shape.key_dim) == 0.0);
  check_backward_workspace(where, device, plan);
  BackwardDecay decay;
  if constexpr (kDecay == DecayKind::key) {
    decay.key_gate = op.log_gate;
    decay.d_key_gate = d_log_gate;
  } else {
    decay.gate = op.log_gate;
    decay.d_gate = d_log_gate;
  }
  run_backward<T, kDecay>({q, k, v, d_o, dq, dk, dv, states, cu, op.scale_for(shape.key_dim), op.precision, shape},
                          decay, plan, device);
}

}  // namespace detail

// Scratch bytes a scalar-gate backward call with these arguments needs on the current device: the
// call's own shapes, states and d_log_gate (present or not), as passed to lcsm::backward.
template <class T>
std::size_t backward_workspace_bytes(const ScalarGatedAttention<T>& op, View<const T, 4> q, View<const T, 4> v,
                                     const StateGrads<float>& states = {}, View<float, 3> d_log_gate = {},
                                     const CuSeqlens& cu_seqlens = {}) {
  return detail::backward_workspace_bytes<detail::DecayKind::token>(
      "lcsm::cuda::backward_workspace_bytes", q, v, states, d_log_gate.present(), cu_seqlens, op.scale_for(q.size(3)));
}
template <class T>
std::size_t backward_workspace_bytes(const VectorGatedAttention<T>& op, View<const T, 4> q, View<const T, 4> v,
                                     const StateGrads<float>& states = {}, View<float, 4> d_log_gate = {},
                                     const CuSeqlens& cu_seqlens = {}) {
  return detail::backward_workspace_bytes<detail::DecayKind::key>(
      "lcsm::cuda::backward_workspace_bytes", q, v, states, d_log_gate.present(), cu_seqlens, op.scale_for(q.size(3)));
}

// Scratch bytes a forward call with these shapes needs on the current device (0: none).
template <class T>
std::size_t forward_workspace_bytes(const ScalarGatedAttention<T>& /*op*/, View<const T, 4> q, View<const T, 4> v,
                                    const CuSeqlens& cu_seqlens = {}) {
  const std::int64_t sequences = cu_seqlens.present() ? cu_seqlens.num_sequences() : q.size(0);
  return detail::workspace_bytes<detail::DecayKind::token>(q.size(1), q.size(2), q.size(3), v.size(3), sequences,
                                                           cu_seqlens.present());
}
template <class T>
std::size_t forward_workspace_bytes(const VectorGatedAttention<T>& /*op*/, View<const T, 4> q, View<const T, 4> v,
                                    const CuSeqlens& cu_seqlens = {}) {
  const std::int64_t sequences = cu_seqlens.present() ? cu_seqlens.num_sequences() : q.size(0);
  return detail::workspace_bytes<detail::DecayKind::key>(q.size(1), q.size(2), q.size(3), v.size(3), sequences,
                                                         cu_seqlens.present());
}

}  // namespace cuda

template <class T>
void forward(const cuda::Device& device, const ScalarGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<float>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  cuda::detail::gated_forward("lcsm::forward(cuda, ScalarGatedAttention)", device, op, q, k, v, o, state, cu_seqlens);
}
template <class T>
void forward(const cuda::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<float>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  cuda::detail::gated_forward("lcsm::forward(cuda, VectorGatedAttention)", device, op, q, k, v, o, state, cu_seqlens);
}

// Backward: dq, dk, dv from do; optionally the initial state's gradient (from the final state's) and
// the gate gradient d_log_gate in the gate's shape ([B, T, H] or [B, T, H, K]), as on the CPU.
// Gradients in the input type; states and d_log_gate fp32; K, V <= 256.
template <class T>
void backward(const cuda::Device& device, const ScalarGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, detail::identity_t<View<T, 4>> dq,
              detail::identity_t<View<T, 4>> dk, detail::identity_t<View<T, 4>> dv,
              const StateGrads<float>& states = {}, View<float, 3> d_log_gate = {}, const CuSeqlens& cu_seqlens = {}) {
  cuda::detail::gated_backward("lcsm::backward(cuda, ScalarGatedAttention)", device, op, q, k, v, d_o, dq, dk, dv,
                               states, d_log_gate, cu_seqlens);
}
template <class T>
void backward(const cuda::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, detail::identity_t<View<T, 4>> dq,
              detail::identity_t<View<T, 4>> dk, detail::identity_t<View<T, 4>> dv,
              const StateGrads<float>& states = {}, View<float, 4> d_log_gate = {}, const CuSeqlens& cu_seqlens = {}) {
  cuda::detail::gated_backward("lcsm::backward(cuda, VectorGatedAttention)", device, op, q, k, v, d_o, dq, dk, dv,
                               states, d_log_gate, cu_seqlens);
}

// Decode: advances state [B, H, K, V] (fp32, in place) by the n tokens of q, k, v and op.log_gate.
template <class T>
void step(const cuda::Device& device, const ScalarGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<float, 4> state) {
  cuda::detail::gated_step("lcsm::step(cuda, ScalarGatedAttention)", device, op, q, k, v, o, state);
}
template <class T>
void step(const cuda::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<float, 4> state) {
  cuda::detail::gated_step("lcsm::step(cuda, VectorGatedAttention)", device, op, q, k, v, o, state);
}

}  // namespace lcsm
