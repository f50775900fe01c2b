// Sequence parallelism's forward over any Collective (collective.cuh): every rank calls it with its
// own contiguous slice [B, T_r, H, K] of the same B sequences (T_r may differ between ranks, and be
// 0), in rank order along time. NCCL's front-end is lcsm/cuda/sequence_parallel.cuh. Host code.
//
//   state.initial: read on rank 0 only (the sequences' initial state); ignored elsewhere.
//   state.final:   on every rank, the state after its slice (on the last rank: the sequences' final
//                  state).
// The call enqueues its kernels and the collective on device.stream and returns; the workspace
// (lcsm::cuda::sequence_parallel::forward_workspace_bytes) is the caller's, 256-byte aligned.
#pragma once

#include <cstddef>
#include <type_traits>

#include "lcsm/core/tensor.hpp"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/sequence_parallel/collective.cuh"
#include "lcsm/cuda/sequence_parallel/slice_forward.cuh"
#include "lcsm/ops/gated.hpp"
#include "lcsm/ops/lightning.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm::cuda::sequence_parallel {
namespace detail {

template <class Op>
struct SliceDecay;
template <>
struct SliceDecay<LightningAttention> {
  static constexpr DecayKind value = DecayKind::head;
};
template <class T>
struct SliceDecay<ScalarGatedAttention<T>> {
  static constexpr DecayKind value = DecayKind::token;
};
template <class T>
struct SliceDecay<VectorGatedAttention<T>> {
  static constexpr DecayKind value = DecayKind::key;
};

// The checks of a rank's call (as the single-GPU forward's, without cu_seqlens), and its decay
// into the params.
template <class T>
ProblemShape check_slice(const char* where, const LightningAttention& op, const View<const T, 4>& q,
                         const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                         const StateIO<float>& state, int rank, int ranks) {
  lcsm::detail::Operands ops(where);
  ops.in("op.log_decay", lcsm::detail::host_vector_view(op.log_decay));
  const auto shape = lcsm::cuda::detail::check_forward_call(where, q, k, v, o, state, CuSeqlens{}, ops);
  op.check(where, shape.heads);
  lcsm::detail::check_argument(shape.heads <= lcsm::cuda::detail::kMaxHeads, where, "q",
                               lcsm::detail::concat("H <= ", lcsm::cuda::detail::kMaxHeads),
                               lcsm::detail::concat("H = ", shape.heads));
  lcsm::detail::check_argument(ranks >= 1 && rank >= 0 && rank < ranks, where, "comm", "0 <= rank < ranks",
                               lcsm::detail::concat("rank ", rank, " of ", ranks));
  return shape;
}
template <class Op, class T>
ProblemShape check_slice(const char* where, const Op& op, const View<const T, 4>& q, const View<const T, 4>& k,
                         const View<const T, 4>& v, const View<T, 4>& o, const StateIO<float>& state, int rank,
                         int ranks) {
  lcsm::detail::Operands ops(where);
  ops.in("op.log_gate", op.log_gate);
  const auto shape = lcsm::cuda::detail::check_forward_call(where, q, k, v, o, state, CuSeqlens{}, ops);
  op.check_layout(where, shape.batch, shape.time, shape.heads, shape.key_dim);
  lcsm::detail::check_argument(ranks >= 1 && rank >= 0 && rank < ranks, where, "comm", "0 <= rank < ranks",
                               lcsm::detail::concat("rank ", rank, " of ", ranks));
  return shape;
}

inline void set_decay(RecurrenceParams& p, const LightningAttention& op) {
  lcsm::cuda::detail::set_head_decay(p, op.log_decay);
}
template <class Op>
void set_decay(RecurrenceParams& p, const Op& op) {
  lcsm::cuda::detail::set_gate(p, op.log_gate);
}

template <DecayKind kDecay>
SliceWorkspace workspace_of(const ProblemShape& shape, int ranks) {
  return slice_workspace(kDecay, shape, lcsm::cuda::detail::plan_forward<kDecay>(shape, false), ranks);
}

// The two phases of one rank's call, for the collective in between (the tests' virtual ranks run
// every rank's first phase, then the gather, then every rank's second).
template <class T, class Op>
SliceForward<T, SliceDecay<Op>::value> make_slice(const char* where, const Device& device, const Op& op,
                                                  const View<const T, 4>& q, const View<const T, 4>& k,
                                                  const View<const T, 4>& v, const View<T, 4>& o,
                                                  const StateIO<float>& state, int rank, int ranks) {
  static_assert(lcsm::cuda::detail::is_cuda_input_v<T>,
                "CUDA sequence parallelism takes float, __half or __nv_bfloat16");
  constexpr DecayKind kDecay = SliceDecay<Op>::value;
  const ProblemShape shape = check_slice(where, op, q, k, v, o, state, rank, ranks);
  const ChunkPlan plan = lcsm::cuda::detail::plan_forward<kDecay>(shape, false);
  const SliceWorkspace space = slice_workspace(kDecay, shape, plan, ranks);
  const Workspace& w = device.workspace;
  if (w.bytes < space.bytes() || (space.bytes() > 0 && w.data == nullptr))
    lcsm::detail::throw_argument(
        where, "device.workspace",
        lcsm::detail::concat("at least ", space.bytes(),
                             " bytes (lcsm::cuda::sequence_parallel::forward_workspace_bytes)"),
        lcsm::detail::concat(w.bytes, " bytes at ", w.data));
  lcsm::detail::check_argument(reinterpret_cast<std::uintptr_t>(w.data) % 256 == 0, where, "device.workspace",
                               "a 256-byte aligned address", lcsm::detail::concat(w.data));
  RecurrenceParams p = lcsm::cuda::detail::make_params(q, k, v, o, op.scale_for(shape.key_dim), shape);
  lcsm::cuda::detail::set_states(p, state, CuSeqlens{});
  set_decay(p, op);
  return SliceForward<T, kDecay>(p, shape, plan, device, op.precision, rank, ranks);
}

template <class T, class Op>
void slice_forward(const char* where, const Device& device, Collective& comm, const Op& op, const View<const T, 4>& q,
                   const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                   const StateIO<float>& state) {
  // Every rank reaches the collective (an early return on one rank would leave the others waiting):
  // a batch of 0 is every rank's (the shapes other than T must agree).
  if (q.size(0) == 0 || q.size(2) == 0) return;
  auto slice = make_slice<T>(where, device, op, q, k, v, o, state, comm.rank(), comm.size());
  slice.deltas();
  comm.all_gather(slice.send(), slice.recv(), slice.block_bytes(), device.stream);
  slice.outputs();
}

}  // namespace detail

// Scratch bytes of one rank's forward with these shapes over `ranks` ranks (the slice's own T).
template <class Op, class T>
std::size_t forward_workspace_bytes(const Op& /*op*/, View<const T, 4> q, View<const T, 4> v, int ranks) {
  const lcsm::detail::ProblemShape shape{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), q.size(0)};
  lcsm::detail::check_problem_size("lcsm::cuda::sequence_parallel::forward_workspace_bytes", "q", shape);
  return detail::workspace_of<detail::SliceDecay<Op>::value>(shape, ranks).bytes();
}

// Forward over a collective: lightning attention, the scalar gate and the vector gate.
template <class T>
void forward(const Device& device, Collective& comm, const LightningAttention& op,
             lcsm::detail::identity_t<View<const T, 4>> q, lcsm::detail::identity_t<View<const T, 4>> k,
             lcsm::detail::identity_t<View<const T, 4>> v, View<T, 4> o, const StateIO<float>& state = {}) {
  detail::slice_forward<T>("lcsm::cuda::sequence_parallel::forward(LightningAttention)", device, comm, op, q, k, v, o,
                           state);
}
template <class T>
void forward(const Device& device, Collective& comm, const ScalarGatedAttention<T>& op,
             lcsm::detail::identity_t<View<const T, 4>> q, lcsm::detail::identity_t<View<const T, 4>> k,
             lcsm::detail::identity_t<View<const T, 4>> v, View<T, 4> o, const StateIO<float>& state = {}) {
  detail::slice_forward<T>("lcsm::cuda::sequence_parallel::forward(ScalarGatedAttention)", device, comm, op, q, k, v, o,
                           state);
}
template <class T>
void forward(const Device& device, Collective& comm, const VectorGatedAttention<T>& op,
             lcsm::detail::identity_t<View<const T, 4>> q, lcsm::detail::identity_t<View<const T, 4>> k,
             lcsm::detail::identity_t<View<const T, 4>> v, View<T, 4> o, const StateIO<float>& state = {}) {
  detail::slice_forward<T>("lcsm::cuda::sequence_parallel::forward(VectorGatedAttention)", device, comm, op, q, k, v, o,
                           state);
}

}  // namespace lcsm::cuda::sequence_parallel
