// The arguments every q/k/v operator shares, and their validation.
#pragma once

#include <cmath>
#include <type_traits>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/core/error.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"

namespace lcsm {

// Optional state views, [N, H, K, V] with N = B (or the number of cu_seqlens sequences).
// `initial` absent: the state starts at zero. `final` absent: the final state is not written.
// Both may view the same memory (the state is advanced in place); partial overlap is an error.
template <class S>
struct StateIO {
  View<const S, 4> initial;
  View<S, 4> final;
};

// Gradients of the states for backward: d_final in (absent: zero), d_initial out (absent: skipped).
template <class S>
struct StateGrads {
  View<const S, 4> initial;  // the initial state the forward used (absent: zero)
  View<const S, 4> d_final;  // dL/d final_state (absent: zero)
  View<S, 4> d_initial;      // dL/d initial_state, written when present
};

namespace detail {

// Deduce T from one argument only, so the others convert (View<T> -> View<const T>).
template <class T>
struct Identity {
  using type = T;
};
template <class T>
using identity_t = typename Identity<T>::type;

// B, T, H, K, V of a q/k/v problem and N, the number of sequences.
struct ProblemShape {
  index_t batch, time, heads, key_dim, value_dim, sequences;
};

// The states' layout: [N, H, K, V], or cosFormer's [N, H, 2K, V + 1] (ops/cosformer.hpp).
enum class StateLayout { kv, cosformer };

// Where cu_seqlens lives: host memory (its offsets are read and validated) or device memory (its
// count and memory only: reading it would synchronise).
enum class OffsetsAt { host, device };

inline Shape<4> state_shape(const ProblemShape& p, StateLayout layout) {
  if (layout == StateLayout::kv) return {p.sequences, p.heads, p.key_dim, p.value_dim};
  return {p.sequences, p.heads, 2 * p.key_dim, p.value_dim + 1};  // bounded by check_qkv
}
inline const char* state_layout_string(StateLayout layout) {
  return layout == StateLayout::kv ? "[N, H, K, V]"
                                   : "[N, H, 2K, V+1] (cos and sin features; V value columns and the denominator's)";
}

// The largest head dimension K or V any call takes: a call's scratch grows with K x V per head and
// worker, and K is bounded by no output's memory (q and k may be broadcast views).
constexpr index_t kMaxHeadDim = 16384;

// Sizes every backend computes from a problem stay within int64: B, T, H, K, V, N >= 0,
// N x H x K x V state elements times 4 (cosFormer's 2K x (V + 1) <= 4 K V) and T + N fit. A size 0
// counts as 1 here, so that an empty batch does not let a wild K through (2K would overflow).
inline void check_problem_size(const char* where, const char* arg, const ProblemShape& p) {
  const auto dims = concat("B = ", p.batch, ", T = ", p.time, ", H = ", p.heads, ", K = ", p.key_dim,
                           ", V = ", p.value_dim, ", N = ", p.sequences);
  index_t elements = 4, sum = 0;
  for (index_t e : {p.batch, p.time, p.heads, p.key_dim, p.value_dim, p.sequences})
    if (e < 0) throw_argument(where, arg, "sizes >= 0", dims);
  for (index_t e : {p.sequences, p.heads, p.key_dim, p.value_dim})
    if (mul_overflows(elements, e > 0 ? e : 1, elements))
      throw_argument(where, arg, "N x H x K x V states whose element count (times 4) fits in 64 bits", dims);
  if (add_overflows(p.time, p.sequences, sum)) throw_argument(where, arg, "T + N within 64 bits", dims);
  if (p.key_dim > kMaxHeadDim || p.value_dim > kMaxHeadDim)
    throw_argument(where, p.key_dim > kMaxHeadDim ? "q" : "v",
                   concat("head dimensions K, V <= ", kMaxHeadDim, " (scratch grows with K x V per head)"), dims);
}

// q, k, v and cu_seqlens (added to ops as inputs: their memory is checked there), the shapes, and
// N x H x K x V state elements (4x that: cosFormer's 2K x (V + 1)) that fit in 64 bits, so that
// no state size computed from them overflows on any backend.
template <class T>
ProblemShape check_qkv(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                       const View<const T, 4>& v, const CuSeqlens& cu, Operands& ops,
                       OffsetsAt offsets = OffsetsAt::host) {
  ops.in("q", q).in("k", k).in("v", v);
  ProblemShape p{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), 0};
  check_argument(p.heads >= 1, where, "q", "[B, T, H, K] with H >= 1", dims_string<4>(q.shape()));
  check_argument(p.key_dim >= 1, where, "q", "[B, T, H, K] with K >= 1", dims_string<4>(q.shape()));
  check_shape(where, "k", k, q.shape(), "[B, T, H, K], the shape of q");
  check_argument(p.value_dim >= 1, where, "v", "[B, T, H, V] with V >= 1", dims_string<4>(v.shape()));
  check_shape(where, "v", v, {p.batch, p.time, p.heads, p.value_dim}, "[B, T, H, V], B, T, H of q");
  if (offsets == OffsetsAt::host) {
    check_cu_seqlens(where, cu, p.batch, p.time);
  } else if (cu.present()) {
    check_cu_seqlens_memory(where, cu);
    check_argument(p.batch == 1, where, "cu_seqlens", "a packed batch with B = 1", concat("B = ", p.batch));
  }
  ops.in("cu_seqlens", cu);
  p.sequences = cu.present() ? cu.num_sequences() : p.batch;
  check_problem_size(where, cu.present() ? "cu_seqlens" : "q", p);
  return p;
}

template <class S>
void check_state_shape(const char* where, const char* arg, const View<S, 4>& s, const ProblemShape& p,
                       StateLayout layout) {
  if (s.absent()) return;
  check_shape(where, arg, s, state_shape(p, layout), state_layout_string(layout));
}

// Forward: inputs q, k, v, cu_seqlens, initial_state and whatever the caller put in ops (the
// operator's own tensors); outputs o and final_state, which may be exactly initial_state (advanced
// in place). Every output disjoint from everything else (Operands::check).
template <class T, class S>
ProblemShape check_forward(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                           const View<const T, 4>& v, const View<T, 4>& o, const StateIO<S>& state, const CuSeqlens& cu,
                           Operands ops, StateLayout layout = StateLayout::kv, OffsetsAt offsets = OffsetsAt::host) {
  const ProblemShape p = check_qkv(where, q, k, v, cu, ops, offsets);
  ops.out("o", o);
  check_shape(where, "o", o, v.shape(), "[B, T, H, V], the shape of v");
  ops.in("initial_state", state.initial);
  check_state_shape(where, "initial_state", state.initial, p, layout);
  ops.out("final_state", state.final, "initial_state");
  check_state_shape(where, "final_state", state.final, p, layout);
  ops.check();
  return p;
}

// Decode: q, k [B, n, H, K], v, o [B, n, H, V], state [B, H, K, V] (or cosFormer's) advanced in
// place: an output, disjoint from every input and from o.
template <class T, class S>
ProblemShape check_step(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                        const View<const T, 4>& v, const View<T, 4>& o, const View<S, 4>& state, Operands ops,
                        StateLayout layout = StateLayout::kv) {
  const ProblemShape p = check_qkv(where, q, k, v, CuSeqlens{}, ops);
  ops.out("o", o);
  check_shape(where, "o", o, v.shape(), "[B, n, H, V], the shape of v");
  check_argument(state.present(), where, "state",
                 concat("a ", layout == StateLayout::kv ? "[B, H, K, V]" : "[B, H, 2K, V+1]", " state to advance"),
                 "an absent view");
  ops.out("state", state);
  check_state_shape(where, "state", state, p, layout);
  ops.check();
  return p;
}

// Backward: inputs q, k, v, do, cu_seqlens, initial_state, d_final_state and the caller's (the
// operator's tensors); outputs dq, dk, dv, d_initial_state and the caller's (the operator's own
// gradients, added to ops before this call). No output overlaps anything else.
template <class T, class S>
ProblemShape check_backward(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                            const View<const T, 4>& v, const View<const T, 4>& d_o, const View<T, 4>& dq,
                            const View<T, 4>& dk, const View<T, 4>& dv, const StateGrads<S>& states,
                            const CuSeqlens& cu, Operands ops, StateLayout layout = StateLayout::kv,
                            OffsetsAt offsets = OffsetsAt::host) {
  const ProblemShape p = check_qkv(where, q, k, v, cu, ops, offsets);
  ops.in("do", d_o);
  check_shape(where, "do", d_o, v.shape(), "[B, T, H, V], the shape of v");
  ops.out("dq", dq).out("dk", dk).out("dv", dv);
  check_shape(where, "dq", dq, q.shape(), "[B, T, H, K], the shape of q");
  check_shape(where, "dk", dk, q.shape(), "[B, T, H, K], the shape of q");
  check_shape(where, "dv", dv, v.shape(), "[B, T, H, V], the shape of v");
  ops.in("initial_state", states.initial).in("d_final_state", states.d_final).out("d_initial_state", states.d_initial);
  check_state_shape(where, "initial_state", states.initial, p, layout);
  check_state_shape(where, "d_final_state", states.d_final, p, layout);
  check_state_shape(where, "d_initial_state", states.d_initial, p, layout);
  ops.check();
  return p;
}

// A view of a host vector (an operator's parameter) for the aliasing rule.
inline View<const double, 1> host_vector_view(const std::vector<double>& x) {
  return {x.data(), {static_cast<index_t>(x.size())}, {1}};
}

}  // namespace detail
}  // namespace lcsm
