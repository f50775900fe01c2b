// The arguments every q/k/v operator shares, and their validation.
#pragma once

#include <cmath>
#include <type_traits>

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

template <class T>
ProblemShape check_qkv(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                       const View<const T, 4>& v, const CuSeqlens& cu) {
  check_memory(where, "q", q);
  check_memory(where, "k", k);
  check_memory(where, "v", v);
  ProblemShape p{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), 0};
  check_argument(p.batch >= 0 && p.time >= 0, where, "q", "[B, T, H, K] with B >= 0, T >= 0",
                 dims_string<4>(q.shape()));
  check_argument(p.heads >= 1, where, "q", "[B, T, H, K] with H >= 1", dims_string<4>(q.shape()));
  check_argument(p.key_dim >= 1, where, "q", "[B, T, H, K] with K >= 1", dims_string<4>(q.shape()));
  check_shape(where, "k", k, q.shape(), "[B, T, H, K], the shape of q");
  check_argument(p.value_dim >= 1, where, "v", "[B, T, H, V] with V >= 1", dims_string<4>(v.shape()));
  check_shape(where, "v", v, {p.batch, p.time, p.heads, p.value_dim}, "[B, T, H, V], B, T, H of q");
  check_cu_seqlens(where, cu, p.batch, p.time);
  p.sequences = cu.present() ? cu.num_sequences() : p.batch;
  return p;
}

template <class S>
void check_state_in(const char* where, const char* arg, const View<const S, 4>& s, const ProblemShape& p) {
  if (s.absent()) return;
  check_memory(where, arg, s);
  check_shape(where, arg, s, {p.sequences, p.heads, p.key_dim, p.value_dim}, "[N, H, K, V]");
}

template <class S>
void check_state_out(const char* where, const char* arg, const View<S, 4>& s, const ProblemShape& p) {
  if (s.absent()) return;
  check_output(where, arg, s);
  check_shape(where, arg, s, {p.sequences, p.heads, p.key_dim, p.value_dim}, "[N, H, K, V]");
}

// In-place (same memory, same strides) is fine; any other overlap is not.
template <class S>
void check_state_alias(const char* where, const char* out_name, const View<S, 4>& out, const char* in_name,
                       const View<const S, 4>& in) {
  if (out.absent() || in.absent()) return;
  if (out.data() == in.data() && out.strides() == in.strides()) return;
  check_disjoint(where, out_name, out, in_name, in);
}

template <class T, class S>
ProblemShape check_forward(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                           const View<const T, 4>& v, const View<T, 4>& o, const StateIO<S>& state,
                           const CuSeqlens& cu) {
  const ProblemShape p = check_qkv(where, q, k, v, cu);
  check_output(where, "o", o);
  check_shape(where, "o", o, v.shape(), "[B, T, H, V], the shape of v");
  check_disjoint(where, "o", o, "q", q);
  check_disjoint(where, "o", o, "k", k);
  check_disjoint(where, "o", o, "v", v);
  check_state_in(where, "initial_state", state.initial, p);
  check_state_out(where, "final_state", state.final, p);
  check_state_alias(where, "final_state", state.final, "initial_state", state.initial);
  check_disjoint(where, "final_state", state.final, "o", o);
  return p;
}

// Decode: q, k [B, n, H, K], v, o [B, n, H, V], state [B, H, K, V] advanced in place.
template <class T, class S>
ProblemShape check_step(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                        const View<const T, 4>& v, const View<T, 4>& o, const View<S, 4>& state) {
  const ProblemShape p = check_qkv(where, q, k, v, CuSeqlens{});
  check_output(where, "o", o);
  check_shape(where, "o", o, v.shape(), "[B, n, H, V], the shape of v");
  check_disjoint(where, "o", o, "q", q);
  check_disjoint(where, "o", o, "k", k);
  check_disjoint(where, "o", o, "v", v);
  check_argument(state.present(), where, "state", "a [B, H, K, V] state to advance", "an absent view");
  check_state_out(where, "state", state, p);
  check_disjoint(where, "state", state, "o", o);
  return p;
}

template <class T, class S>
ProblemShape check_backward(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                            const View<const T, 4>& v, const View<const T, 4>& d_o, const View<T, 4>& dq,
                            const View<T, 4>& dk, const View<T, 4>& dv, const StateGrads<S>& states,
                            const CuSeqlens& cu) {
  const ProblemShape p = check_qkv(where, q, k, v, cu);
  check_memory(where, "do", d_o);
  check_shape(where, "do", d_o, v.shape(), "[B, T, H, V], the shape of v");
  const char* names[] = {"dq", "dk", "dv"};
  const View<T, 4>* outs[] = {&dq, &dk, &dv};
  for (int i = 0; i < 3; ++i) {
    check_output(where, names[i], *outs[i]);
    check_shape(where, names[i], *outs[i], i < 2 ? q.shape() : v.shape(),
                i < 2 ? "[B, T, H, K], the shape of q" : "[B, T, H, V], the shape of v");
    check_disjoint(where, names[i], *outs[i], "q", q);
    check_disjoint(where, names[i], *outs[i], "k", k);
    check_disjoint(where, names[i], *outs[i], "v", v);
    check_disjoint(where, names[i], *outs[i], "do", d_o);
    for (int j = 0; j < i; ++j) check_disjoint(where, names[i], *outs[i], names[j], *outs[j]);
  }
  check_state_in(where, "initial_state", states.initial, p);
  check_state_in(where, "d_final_state", states.d_final, p);
  check_state_out(where, "d_initial_state", states.d_initial, p);
  return p;
}

}  // namespace detail
}  // namespace lcsm
