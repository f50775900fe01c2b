// The gated recurrences (scalar gate, vector gate) as EOS instances, evaluated by the float64
// reference: shrink = scale * q, expand = k, input = v, log-decay = the gate, broadcast over K for
// the scalar gate (oscillation `token`) or as given (`token_key`). Also their own quadratic formula
// from sums of logs, an order independent of both EOS evaluations:
//   o_t = scale * ( sum_{j<=t} sum_k q_tk k_jk exp(G_tk - G_jk) v_j + sum_k q_tk exp(G_tk) S_0[k, :] ),
//   G_t = sum_{r<=t} g_r from the start of the sequence.
#pragma once

#include <cmath>
#include <type_traits>
#include <vector>

#include "lcsm/ops/gated.hpp"
#include "lcsm/reference/eos.hpp"

namespace lcsm::reference {
namespace detail {

inline View<const double, 4> gate_as_eos(const View<const double, 3>& g, index_t K) {
  return {g.data(), {g.size(0), g.size(1), g.size(2), K}, {g.stride(0), g.stride(1), g.stride(2), 0}};
}
inline View<const double, 4> gate_as_eos(const View<const double, 4>& g, index_t) { return g; }

template <class Op>
constexpr Oscillation gate_kind() {
  return std::is_same_v<Op, ScalarGatedAttention<double>> ? Oscillation::token : Oscillation::token_key;
}

}  // namespace detail

// Owns the scaled queries the EOS views point into; the gate is viewed in place.
template <class Op>
class GatedEos {
 public:
  GatedEos(const Op& op, View<const double, 4> q, View<const double, 4> k, View<const double, 4> v,
           View<const double, 4> initial_state = {}, CuSeqlens cu = {})
      : scale_(op.scale_for(q.size(3))) {
    const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
    op.check("lcsm::reference::GatedEos", B, T, H, K);
    scaled_q_.resize(B * T * H * K);
    auto s = lcsm::view(scaled_q_.data(), {B, T, H, K});
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < K; ++d) s(b, t, h, d) = scale_ * q(b, t, h, d);
    eos_.shrink = s;
    eos_.expand = k;
    eos_.input = v;
    eos_.log_decay = detail::gate_as_eos(op.log_gate, K);
    eos_.initial_state = initial_state;
    eos_.cu_seqlens = cu;
  }
  GatedEos(const GatedEos&) = delete;
  GatedEos& operator=(const GatedEos&) = delete;

  const Eos& eos() const { return eos_; }
  double scale() const { return scale_; }

 private:
  double scale_;
  std::vector<double> scaled_q_;
  Eos eos_;
};

struct GatedGrads {
  View<double, 4> dq, dk, dv, d_initial_state;  // each absent view is skipped
  std::vector<double> d_log_gate;               // row-major [B, T, H] (scalar) or [B, T, H, K] (vector)
};

template <class Op>
void gated_forward(const Op& op, View<const double, 4> q, View<const double, 4> k, View<const double, 4> v,
                   View<double, 4> o, View<const double, 4> initial_state = {}, View<double, 4> final_state = {},
                   CuSeqlens cu = {}, bool parallel_order = false) {
  const GatedEos<Op> mapped(op, q, k, v, initial_state, cu);
  if (parallel_order) parallel(mapped.eos(), o, final_state);
  else recurrent(mapped.eos(), o, final_state);
}

template <class Op>
GatedGrads gated_backward(const Op& op, View<const double, 4> q, View<const double, 4> k, View<const double, 4> v,
                          View<const double, 4> d_o, View<double, 4> dq, View<double, 4> dk, View<double, 4> dv,
                          View<const double, 4> initial_state = {}, View<const double, 4> d_final_state = {},
                          View<double, 4> d_initial_state = {}, CuSeqlens cu = {}) {
  const GatedEos<Op> mapped(op, q, k, v, initial_state, cu);
  const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  std::vector<double> dg(B * T * H * K);
  EosGrads g;
  g.d_shrink = dq;
  g.d_expand = dk;
  g.d_input = dv;
  g.d_log_decay = lcsm::view(dg.data(), {B, T, H, K});
  g.d_initial_state = d_initial_state;
  backward(mapped.eos(), d_o, d_final_state, g);
  if (dq.present())  // d/dq = scale * d/d(shrink)
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < K; ++d) dq(b, t, h, d) *= mapped.scale();
  GatedGrads out{dq, dk, dv, d_initial_state, {}};
  out.d_log_gate =
      reduce_log_decay_grad(lcsm::view(static_cast<const double*>(dg.data()), {B, T, H, K}), detail::gate_kind<Op>());
  return out;
}

// The quadratic formula above, O(T^2 K V) per head, from cumulative sums of the log gates.
template <class Op>
void gated_direct(const Op& op, View<const double, 4> q, View<const double, 4> k, View<const double, 4> v,
                  View<double, 4> o, View<const double, 4> initial_state = {}, CuSeqlens cu = {}) {
  const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  op.check("lcsm::reference::gated_direct", B, T, H, K);
  const double scale = op.scale_for(K);
  const View<const double, 4> g = detail::gate_as_eos(op.log_gate, K);
  const Sequences seqs(B, T, cu);
  std::vector<double> G;
  for (index_t n = 0; n < seqs.size(); ++n) {
    const Sequence sq = seqs[n];
    const index_t b = sq.batch;
    for (index_t h = 0; h < H; ++h) {
      G.assign(sq.length * K, 0.0);  // G[t][k], inclusive
      for (index_t t = 0; t < sq.length; ++t)
        for (index_t d = 0; d < K; ++d) G[t * K + d] = (t ? G[(t - 1) * K + d] : 0.0) + g(b, sq.start + t, h, d);
      for (index_t t = 0; t < sq.length; ++t)
        for (index_t c = 0; c < V; ++c) {
          double acc = 0;
          for (index_t j = 0; j <= t; ++j) {
            double w = 0;
            for (index_t d = 0; d < K; ++d)
              w += q(b, sq.start + t, h, d) * k(b, sq.start + j, h, d) * std::exp(G[t * K + d] - G[j * K + d]);
            acc += w * v(b, sq.start + j, h, c);
          }
          if (initial_state.present())
            for (index_t d = 0; d < K; ++d)
              acc += q(b, sq.start + t, h, d) * std::exp(G[t * K + d]) * initial_state(n, h, d, c);
          o(b, sq.start + t, h, c) = scale * acc;
        }
    }
  }
}

}  // namespace lcsm::reference
