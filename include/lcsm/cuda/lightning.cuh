// Lightning attention on CUDA: forward (prefill), backward and decode step. Include from a .cu file.
//
//   lcsm::cuda::Device dev{stream, {workspace_ptr, workspace_bytes}};
//   lcsm::forward<__nv_bfloat16>(dev, op, q, k, v, o, {initial_state, final_state}, cu_seqlens);
//   lcsm::step<__nv_bfloat16>(dev, op, q1, k1, v1, o1, state);
//
// Views point to device memory. Everything is enqueued on dev.stream: no call synchronises, none
// allocates. Long sequences with few heads need scratch memory: lcsm::cuda::forward_workspace_bytes
// says how much (0 when none), and forward throws lcsm::Error when dev.workspace is smaller.
// cu_seqlens lives in device memory; its count is checked, its contents are not (that would need a
// synchronisation): offsets are clamped to [0, T], so bad ones give wrong results, never bad accesses.
// The algorithm is the chunked engine's (cuda/chunked/) with the per-head decay; the backward is
// three passes of it (chunked/backward.cuh) and needs workspace (lcsm::cuda::backward_workspace_bytes).
#pragma once

#include "lcsm/cuda/chunked/backward.cuh"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/ops/lightning.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cuda {

// Scratch bytes a forward call with these shapes needs on the current device (0: none).
template <class T>
std::size_t forward_workspace_bytes(const LightningAttention& /*op*/, View<const T, 4> q, View<const T, 4> v,
                                    const CuSeqlens& cu_seqlens = {}) {
  const std::int64_t sequences = cu_seqlens.present() ? cu_seqlens.num_sequences() : q.size(0);
  return detail::workspace_bytes<detail::DecayKind::head>(q.size(1), q.size(2), q.size(3), v.size(3), sequences,
                                                          cu_seqlens.present());
}

// Scratch bytes a backward call with these arguments needs on the current device: the call's own
// shapes, states and d_log_decay (present or not), as passed to lcsm::backward.
template <class T>
std::size_t backward_workspace_bytes(const LightningAttention& op, View<const T, 4> q, View<const T, 4> v,
                                     const StateGrads<float>& states = {}, View<float, 1> d_log_decay = {},
                                     const CuSeqlens& cu_seqlens = {}) {
  return detail::backward_workspace_bytes<detail::DecayKind::head>(
      "lcsm::cuda::backward_workspace_bytes", q, v, states, d_log_decay.present(), cu_seqlens, op.scale_for(q.size(3)));
}

}  // namespace cuda

// Forward on the GPU: o = lightning(q, k, v). T is float, __half or __nv_bfloat16; states are fp32.
template <class T>
void forward(const cuda::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<float>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA lightning attention takes float, __half or __nv_bfloat16");
  using cuda::detail::DecayKind;
  const char* where = "lcsm::forward(cuda, LightningAttention)";
  detail::Operands ops(where);
  ops.in("op.log_decay", detail::host_vector_view(op.log_decay));
  const auto shape = cuda::detail::check_forward_call(where, q, k, v, o, state, cu_seqlens, ops);
  op.check(where, shape.heads);
  detail::check_argument(shape.heads <= cuda::detail::kMaxHeads, where, "q",
                         detail::concat("H <= ", cuda::detail::kMaxHeads), detail::concat("H = ", shape.heads));
  // Nothing to do, or no tokens and no state: nothing to plan (a batch of any size, bounded by no
  // view's memory, must not become a grid).
  if (shape.batch == 0 || shape.sequences == 0 || (shape.time == 0 && state.final.absent())) return;

  const auto plan = cuda::detail::plan_forward<DecayKind::head>(shape, cu_seqlens.present());
  cuda::detail::check_workspace(where, device, plan);
  auto params = cuda::detail::make_params(q, k, v, o, op.scale_for(shape.key_dim), shape);
  cuda::detail::set_states(params, state, cu_seqlens);
  cuda::detail::set_head_decay(params, op.log_decay);
  cuda::detail::run_forward<T, DecayKind::head>(params, plan, device, op.precision);
}

// Backward on the GPU: dq, dk, dv from do; optionally the initial state's gradient (from the final
// state's) and each head's log-decay gradient d_log_decay [H] (summed over the batch), as on the CPU.
// Gradients in the input type; states and d_log_decay fp32; K, V <= 256.
template <class T>
void backward(const cuda::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, View<T, 4> dq, detail::identity_t<View<T, 4>> dk,
              detail::identity_t<View<T, 4>> dv, const StateGrads<float>& states = {}, View<float, 1> d_log_decay = {},
              const CuSeqlens& cu_seqlens = {}) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA lightning attention takes float, __half or __nv_bfloat16");
  using cuda::detail::DecayKind;
  const char* where = "lcsm::backward(cuda, LightningAttention)";
  detail::Operands ops(where);
  ops.in("op.log_decay", detail::host_vector_view(op.log_decay)).out("d_log_decay", d_log_decay);
  const auto shape = cuda::detail::check_backward_call(where, q, k, v, d_o, dq, dk, dv, states, cu_seqlens, ops);
  op.check(where, shape.heads);
  detail::check_argument(shape.heads <= cuda::detail::kMaxHeads, where, "q",
                         detail::concat("H <= ", cuda::detail::kMaxHeads), detail::concat("H = ", shape.heads));
  if (d_log_decay.present()) detail::check_shape(where, "d_log_decay", d_log_decay, {shape.heads}, "[H]");
  if (shape.batch == 0 || shape.sequences == 0 || (shape.time == 0 && states.d_initial.absent())) {
    if (d_log_decay.present()) cuda::detail::zero_head_gradient(d_log_decay, device.stream);
    return;
  }
  const auto plan = cuda::detail::plan_backward<DecayKind::head>(shape, cu_seqlens.present(), states.d_final.present(),
                                                                 d_log_decay.present(), std::is_same_v<T, float>,
                                                                 op.scale_for(shape.key_dim) == 0.0);
  cuda::detail::check_backward_workspace(where, device, plan);
  cuda::detail::BackwardDecay decay;
  decay.log_decay = &op.log_decay;
  decay.d_log_decay = d_log_decay;
  cuda::detail::run_backward<T, DecayKind::head>(
      {q, k, v, d_o, dq, dk, dv, states, cu_seqlens, op.scale_for(shape.key_dim), op.precision, shape}, decay, plan,
      device);
}

// Decode on the GPU: advances state [B, H, K, V] (fp32, in place) by the n tokens of q, k [B, n, H, K],
// v [B, n, H, V], writing o [B, n, H, V].
template <class T>
void step(const cuda::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<float, 4> state) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA lightning attention takes float, __half or __nv_bfloat16");
  using cuda::detail::DecayKind;
  const char* where = "lcsm::step(cuda, LightningAttention)";
  detail::Operands ops(where);
  ops.in("op.log_decay", detail::host_vector_view(op.log_decay));
  const auto shape = detail::check_step(where, q, k, v, o, state, ops);
  op.check(where, shape.heads);
  detail::check_argument(shape.heads <= cuda::detail::kMaxHeads, where, "q",
                         detail::concat("H <= ", cuda::detail::kMaxHeads), detail::concat("H = ", shape.heads));
  cuda::detail::check_step_dims(where, shape);
  if (shape.batch == 0 || shape.time == 0) return;

  auto params = cuda::detail::make_params(q, k, v, o, op.scale_for(shape.key_dim), shape);
  cuda::detail::set_head_decay(params, op.log_decay);
  cuda::detail::run_step<T, DecayKind::head>(params, state, device.stream);
}

}  // namespace lcsm
