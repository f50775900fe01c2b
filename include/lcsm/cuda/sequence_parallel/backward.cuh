// Sequence parallelism's backward over any Collective: every rank calls it with its slice's q, k,
// v, dO and gradients (as the forward: [B, T_r, H, *], rank order along time). Host code.
//
//   states.initial:   read on rank 0 only (the sequences' initial state);
//   states.d_final:   read on the last rank only (the loss's gradient for the final state);
//   states.d_initial: on every rank, the gradient for the state at its slice's start (on rank 0:
//                     the sequences' initial state's).
// The decay gradient: lightning's d_log_decay [H] is the whole sequences' on every rank (a third
// all-gather; every rank must ask for it, or none); the gates' d_log_gate covers the rank's slice.
// scale = 0 is not supported here. Workspace: backward_workspace_bytes, 256-byte aligned.
#pragma once

#include "lcsm/cuda/sequence_parallel/forward.cuh"
#include "lcsm/cuda/sequence_parallel/slice_backward.cuh"

namespace lcsm::cuda::sequence_parallel {
namespace detail {

template <class T, class Op>
ProblemShape check_backward_slice(const char* where, const Op& op, const SliceBackwardCall<T>& c, int rank, int ranks,
                                  lcsm::detail::Operands& ops) {
  const auto shape = lcsm::cuda::detail::check_backward_call(where, c.q, c.k, c.v, c.d_o, c.dq, c.dk, c.dv, c.states,
                                                             CuSeqlens{}, ops);
  if constexpr (std::is_same_v<Op, LightningAttention>) {
    op.check(where, shape.heads);
    lcsm::detail::check_argument(shape.heads <= lcsm::cuda::detail::kMaxHeads, where, "q",
                                 lcsm::detail::concat("H <= ", lcsm::cuda::detail::kMaxHeads),
                                 lcsm::detail::concat("H = ", shape.heads));
  } else {
    op.check_layout(where, shape.batch, shape.time, shape.heads, shape.key_dim);
  }
  lcsm::detail::check_argument(ranks >= 1 && rank >= 0 && rank < ranks, where, "comm", "0 <= rank < ranks",
                               lcsm::detail::concat("rank ", rank, " of ", ranks));
  lcsm::detail::check_argument(op.scale_for(shape.key_dim) != 0.0, where, "op.scale",
                               "a non-zero scale (sequence parallelism)", "0");
  return shape;
}

template <class T, class Op, class DG>
void backward_entry(const char* where, const Device& device, Collective& comm, const Op& op, SliceBackwardCall<T> c,
                    const DG& d_decay) {
  if (c.q.size(0) == 0 || c.q.size(2) == 0) {              // every rank's (B and H agree): no collective
    if constexpr (std::is_same_v<Op, LightningAttention>)  // as the single-GPU call: d_log_decay = 0
      if (d_decay.present() && d_decay.numel() > 0) lcsm::cuda::detail::zero_head_gradient(d_decay, device.stream);
    return;
  }
  constexpr DecayKind kDecay = SliceDecay<Op>::value;
  lcsm::detail::Operands ops(where);
  BackwardDecay decay;
  View<float, 1> d_log_decay;
  if constexpr (std::is_same_v<Op, LightningAttention>) {
    ops.in("op.log_decay", lcsm::detail::host_vector_view(op.log_decay)).out("d_log_decay", d_decay);
    decay.log_decay = &op.log_decay;
    d_log_decay = d_decay;
  } else if constexpr (kDecay == DecayKind::key) {
    ops.in("op.log_gate", op.log_gate).out("d_log_gate", d_decay);
    decay.key_gate = op.log_gate;
    decay.d_key_gate = d_decay;
  } else {
    ops.in("op.log_gate", op.log_gate).out("d_log_gate", d_decay);
    decay.gate = op.log_gate;
    decay.d_gate = d_decay;
  }
  c.shape = check_backward_slice(where, op, c, comm.rank(), comm.size(), ops);
  if constexpr (std::is_same_v<Op, LightningAttention>) {
    if (d_decay.present()) lcsm::detail::check_shape(where, "d_log_decay", d_decay, {c.shape.heads}, "[H]");
  } else {
    if (d_decay.present())
      lcsm::detail::check_shape(where, "d_log_gate", d_decay, op.log_gate.shape(), "the shape of op.log_gate");
  }
  c.scale = op.scale_for(c.shape.key_dim);
  c.precision = op.precision;
  const auto space = slice_backward_workspace<kDecay>(
      c.shape, comm.size(), decay.wants_gradient() || d_log_decay.present(), std::is_same_v<T, float>);
  const Workspace& w = device.workspace;
  if (w.bytes < space.bytes() || (space.bytes() > 0 && w.data == nullptr))
    lcsm::detail::throw_argument(
        where, "device.workspace",
        lcsm::detail::concat("at least ", space.bytes(),
                             " bytes (lcsm::cuda::sequence_parallel::backward_workspace_bytes)"),
        lcsm::detail::concat(w.bytes, " bytes at ", w.data));
  lcsm::detail::check_argument(reinterpret_cast<std::uintptr_t>(w.data) % 256 == 0, where, "device.workspace",
                               "a 256-byte aligned address", lcsm::detail::concat(w.data));
  slice_backward<T, kDecay>(c, decay, d_log_decay, device, comm);
}

}  // namespace detail

// Scratch bytes of one rank's backward with these shapes over `ranks` ranks; decay_gradient: the
// call passes d_log_decay / d_log_gate.
template <class Op, class T>
std::size_t backward_workspace_bytes(const Op& /*op*/, View<const T, 4> q, View<const T, 4> v, int ranks,
                                     bool decay_gradient) {
  const lcsm::detail::ProblemShape shape{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), q.size(0)};
  lcsm::detail::check_problem_size("lcsm::cuda::sequence_parallel::backward_workspace_bytes", "q", shape);
  return detail::slice_backward_workspace<detail::SliceDecay<Op>::value>(shape, ranks, decay_gradient,
                                                                         std::is_same_v<T, float>)
      .bytes();
}

template <class T>
void backward(const Device& device, Collective& comm, const LightningAttention& op,
              lcsm::detail::identity_t<View<const T, 4>> q, lcsm::detail::identity_t<View<const T, 4>> k,
              lcsm::detail::identity_t<View<const T, 4>> v, lcsm::detail::identity_t<View<const T, 4>> d_o,
              lcsm::detail::identity_t<View<T, 4>> dq, lcsm::detail::identity_t<View<T, 4>> dk,
              lcsm::detail::identity_t<View<T, 4>> dv, const StateGrads<float>& states = {},
              View<float, 1> d_log_decay = {}) {
  detail::backward_entry<T>("lcsm::cuda::sequence_parallel::backward(LightningAttention)", device, comm, op,
                            detail::SliceBackwardCall<T>{q, k, v, d_o, dq, dk, dv, states, 0.0, op.precision, {}},
                            d_log_decay);
}
template <class T>
void backward(const Device& device, Collective& comm, const ScalarGatedAttention<T>& op,
              lcsm::detail::identity_t<View<const T, 4>> q, lcsm::detail::identity_t<View<const T, 4>> k,
              lcsm::detail::identity_t<View<const T, 4>> v, lcsm::detail::identity_t<View<const T, 4>> d_o,
              lcsm::detail::identity_t<View<T, 4>> dq, lcsm::detail::identity_t<View<T, 4>> dk,
              lcsm::detail::identity_t<View<T, 4>> dv, const StateGrads<float>& states = {},
              View<float, 3> d_log_gate = {}) {
  detail::backward_entry<T>("lcsm::cuda::sequence_parallel::backward(ScalarGatedAttention)", device, comm, op,
                            detail::SliceBackwardCall<T>{q, k, v, d_o, dq, dk, dv, states, 0.0, op.precision, {}},
                            d_log_gate);
}
template <class T>
void backward(const Device& device, Collective& comm, const VectorGatedAttention<T>& op,
              lcsm::detail::identity_t<View<const T, 4>> q, lcsm::detail::identity_t<View<const T, 4>> k,
              lcsm::detail::identity_t<View<const T, 4>> v, lcsm::detail::identity_t<View<const T, 4>> d_o,
              lcsm::detail::identity_t<View<T, 4>> dq, lcsm::detail::identity_t<View<T, 4>> dk,
              lcsm::detail::identity_t<View<T, 4>> dv, const StateGrads<float>& states = {},
              View<float, 4> d_log_gate = {}) {
  detail::backward_entry<T>("lcsm::cuda::sequence_parallel::backward(VectorGatedAttention)", device, comm, op,
                            detail::SliceBackwardCall<T>{q, k, v, d_o, dq, dk, dv, states, 0.0, op.precision, {}},
                            d_log_gate);
}

}  // namespace lcsm::cuda::sequence_parallel
