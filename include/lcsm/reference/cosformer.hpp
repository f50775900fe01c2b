// cosFormer in float64: the direct quadratic formula, and the mapping onto the EOS reference
// (2K cos/sin features, input [v, 1], oscillation none) with the division done on its output.
// Plain loops, nothing shared with the backends.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "lcsm/ops/cosformer.hpp"
#include "lcsm/reference/eos.hpp"

namespace lcsm::reference {

inline double cosformer_phi(CosFormerAttention::FeatureMap map, double x) {
  if (map == CosFormerAttention::FeatureMap::relu) return x < 0 ? 0.0 : x;  // NaN stays NaN
  return x > 0 ? x + 1.0 : std::exp(x);
}
// d phi / dx: ReLU's is 0 at x <= 0; 1 + ELU's is exp(x) below 0 and 1 above.
inline double cosformer_phi_grad(CosFormerAttention::FeatureMap map, double x) {
  if (map == CosFormerAttention::FeatureMap::relu) return x > 0 ? 1.0 : 0.0;
  return x > 0 ? 1.0 : std::exp(x);
}
// The angle pi p / (2M) of position p.
inline double cosformer_angle(index_t p, index_t M) {
  return 3.14159265358979323846 * static_cast<double>(p) / (2.0 * static_cast<double>(M));
}

namespace detail {

// Validates what both evaluations need and calls f(sequence, position of its first token, M).
template <class F>
void for_each_cosformer_sequence(const CosFormerAttention& op, const char* where, View<const double, 4> q,
                                 const CuSeqlens& cu, F&& f) {
  op.check(where);
  const Sequences seqs(q.size(0), q.size(1), cu);
  op.check_positions(
      where, seqs.size(), [&](index_t n) { return seqs[n].length; }, false);
  for (index_t n = 0; n < seqs.size(); ++n) {
    const index_t first = op.position_of(n);
    f(n, seqs[n], first, op.length_for(first, seqs[n].length));
  }
}

}  // namespace detail

// o_i = (sum_j w_ij (phi(q_i).phi(k_j)) v_j + q'_i^T S0) / max(sum_j w_ij phi(q_i).phi(k_j) + q'_i . z0, eps),
// straight from the definition: O(T^2 (K + V)) per head. initial_state [N, H, 2K, V + 1] or absent.
inline void cosformer_direct(const CosFormerAttention& op, View<const double, 4> q, View<const double, 4> k,
                             View<const double, 4> v, View<double, 4> o, View<const double, 4> initial_state = {},
                             CuSeqlens cu = {}) {
  const index_t H = q.size(2), K = q.size(3), V = v.size(3);
  std::vector<double> num(V);
  detail::for_each_cosformer_sequence(
      op, "lcsm::reference::cosformer_direct", q, cu, [&](index_t n, const Sequence& sq, index_t first, index_t M) {
        const index_t b = sq.batch;
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < sq.length; ++i) {
            const index_t ti = sq.start + i;
            std::fill(num.begin(), num.end(), 0.0);
            double den = 0;
            const index_t last = op.causal ? i : sq.length - 1;
            for (index_t j = 0; j <= last; ++j) {
              const index_t tj = sq.start + j;
              double dot = 0;
              for (index_t d = 0; d < K; ++d)
                dot += cosformer_phi(op.feature_map, q(b, ti, h, d)) * cosformer_phi(op.feature_map, k(b, tj, h, d));
              const double w = std::cos(cosformer_angle(i - j, M)) * dot;
              den += w;
              for (index_t c = 0; c < V; ++c) num[c] += w * v(b, tj, h, c);
            }
            if (initial_state.present()) {
              const double a = cosformer_angle(first + i, M), cs = std::cos(a), sn = std::sin(a);
              for (index_t d = 0; d < K; ++d) {
                const double p = cosformer_phi(op.feature_map, q(b, ti, h, d));
                for (index_t c = 0; c <= V; ++c) {
                  const double s = cs * p * initial_state(n, h, d, c) + sn * p * initial_state(n, h, K + d, c);
                  if (c < V) num[c] += s;
                  else den += s;
                }
              }
            }
            for (index_t c = 0; c < V; ++c) o(b, ti, h, c) = num[c] / std::max(den, op.eps);
          }
      });
}

// cosFormer as an EOS instance: owns q' = [phi(q) cos, phi(q) sin], k' likewise ([B, T, H, 2K]) and
// v' = [v, 1] ([B, T, H, V + 1]) that the instance's views point into.
class CosformerEos {
 public:
  CosformerEos(const CosFormerAttention& op, View<const double, 4> q, View<const double, 4> k, View<const double, 4> v,
               View<const double, 4> initial_state = {}, CuSeqlens cu = {})
      : B_(q.size(0)), T_(q.size(1)), H_(q.size(2)), K_(q.size(3)), V_(v.size(3)) {
    const index_t K2 = 2 * K_, V1 = V_ + 1;
    qf_.assign(B_ * T_ * H_ * K2, 0.0);
    kf_.assign(qf_.size(), 0.0);
    vf_.assign(B_ * T_ * H_ * V1, 0.0);
    angle_.assign(B_ * T_, 0.0);
    const auto qf = lcsm::view(qf_.data(), {B_, T_, H_, K2}), kf = lcsm::view(kf_.data(), {B_, T_, H_, K2});
    const auto vf = lcsm::view(vf_.data(), {B_, T_, H_, V1});
    detail::for_each_cosformer_sequence(
        op, "lcsm::reference::CosformerEos", q, cu, [&](index_t, const Sequence& sq, index_t first, index_t M) {
          for (index_t i = 0; i < sq.length; ++i) {
            const index_t b = sq.batch, t = sq.start + i;
            const double a = cosformer_angle(first + i, M), cs = std::cos(a), sn = std::sin(a);
            angle_[b * T_ + t] = a;
            for (index_t h = 0; h < H_; ++h) {
              for (index_t d = 0; d < K_; ++d) {
                const double pq = cosformer_phi(op.feature_map, q(b, t, h, d));
                const double pk = cosformer_phi(op.feature_map, k(b, t, h, d));
                qf(b, t, h, d) = pq * cs;
                qf(b, t, h, K_ + d) = pq * sn;
                kf(b, t, h, d) = pk * cs;
                kf(b, t, h, K_ + d) = pk * sn;
              }
              for (index_t c = 0; c < V_; ++c) vf(b, t, h, c) = v(b, t, h, c);
              vf(b, t, h, V_) = 1.0;
            }
          }
        });
    eos_.shrink = qf;
    eos_.expand = kf;
    eos_.input = vf;
    eos_.initial_state = initial_state;
    eos_.cu_seqlens = cu;
  }
  CosformerEos(const CosformerEos&) = delete;
  CosformerEos& operator=(const CosformerEos&) = delete;

  const Eos& eos() const { return eos_; }
  // The angle pi p / 2M of token (b, t).
  double angle(index_t b, index_t t) const { return angle_[b * T_ + t]; }

 private:
  index_t B_, T_, H_, K_, V_;
  std::vector<double> qf_, kf_, vf_, angle_;
  Eos eos_;
};

namespace detail {

// y [B, T, H, V + 1]: the EOS outputs, causal (recurrent) or over whole sequences (q'_i^T S_final).
// final_state [N, H, 2K, V + 1] is written when present (and always needed for non-causal).
inline void cosformer_eos_outputs(const CosFormerAttention& op, const CosformerEos& mapped, View<double, 4> y,
                                  View<double, 4> final_state) {
  const Eos& e = mapped.eos();
  if (op.causal) {
    recurrent(e, y, final_state);
    return;
  }
  recurrent(e, y, final_state);  // y is overwritten below
  const index_t H = e.heads(), K2 = e.key_dim(), V1 = e.value_dim();
  const Sequences seqs(e.batch(), e.time(), e.cu_seqlens);
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t t = seqs[n].start; t < seqs[n].start + seqs[n].length; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < V1; ++c) {
          double acc = 0;
          for (index_t d = 0; d < K2; ++d) acc += e.shrink(seqs[n].batch, t, h, d) * final_state(n, h, d, c);
          y(seqs[n].batch, t, h, c) = acc;
        }
}

}  // namespace detail

// o [B, T, H, V] through the EOS reference; final_state [N, H, 2K, V + 1] when present.
inline void cosformer_forward(const CosFormerAttention& op, View<const double, 4> q, View<const double, 4> k,
                              View<const double, 4> v, View<double, 4> o, View<const double, 4> initial_state = {},
                              View<double, 4> final_state = {}, CuSeqlens cu = {}) {
  const CosformerEos mapped(op, q, k, v, initial_state, cu);
  const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  const index_t N = mapped.eos().sequences();
  std::vector<double> y(B * T * H * (V + 1)), sT(N * H * 2 * K * (V + 1));
  detail::cosformer_eos_outputs(op, mapped, lcsm::view(y.data(), {B, T, H, V + 1}),
                                lcsm::view(sT.data(), {N, H, 2 * K, V + 1}));
  const Sequences seqs(B, T, cu);
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t t = seqs[n].start; t < seqs[n].start + seqs[n].length; ++t)
      for (index_t h = 0; h < H; ++h) {
        const double* row = &y[((seqs[n].batch * T + t) * H + h) * (V + 1)];
        for (index_t c = 0; c < V; ++c) o(seqs[n].batch, t, h, c) = row[c] / std::max(row[V], op.eps);
      }
  if (final_state.present())
    for (index_t n = 0; n < N; ++n)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < 2 * K; ++d)
          for (index_t c = 0; c <= V; ++c) final_state(n, h, d, c) = sT[((n * H + h) * 2 * K + d) * (V + 1) + c];
}

// Gradients of q, k, v and of the initial state given do and the gradient of the final state
// (each absent view skipped / zero). The division o = num / max(den, eps) gives the EOS output
// gradient dy = [do / den, -(do . o) / den] (0 for den where the clamp is active); the EOS reference
// backward (or, non-causal, its state form) gives dq', dk', dv'; dq = phi'(q) (cos dq'_cos + sin dq'_sin).
inline void cosformer_backward(const CosFormerAttention& op, View<const double, 4> q, View<const double, 4> k,
                               View<const double, 4> v, View<const double, 4> d_o, View<double, 4> dq,
                               View<double, 4> dk, View<double, 4> dv, View<const double, 4> initial_state = {},
                               View<const double, 4> d_final_state = {}, View<double, 4> d_initial_state = {},
                               CuSeqlens cu = {}) {
  const CosformerEos mapped(op, q, k, v, initial_state, cu);
  const Eos& e = mapped.eos();
  const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  const index_t K2 = 2 * K, V1 = V + 1, N = e.sequences();
  std::vector<double> y(B * T * H * V1), sT(N * H * K2 * V1), dy(B * T * H * V1, 0.0);
  const auto yv = lcsm::view(y.data(), {B, T, H, V1});
  const auto sv = lcsm::view(sT.data(), {N, H, K2, V1});
  const auto dyv = lcsm::view(dy.data(), {B, T, H, V1});
  detail::cosformer_eos_outputs(op, mapped, yv, sv);
  const Sequences seqs(B, T, cu);
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t t = seqs[n].start; t < seqs[n].start + seqs[n].length; ++t)
      for (index_t h = 0; h < H; ++h) {
        const index_t b = seqs[n].batch;
        const double den = yv(b, t, h, V), dc = std::max(den, op.eps);
        double dot = 0;
        for (index_t c = 0; c < V; ++c) {
          dyv(b, t, h, c) = d_o(b, t, h, c) / dc;
          dot += d_o(b, t, h, c) * yv(b, t, h, c) / dc;
        }
        dyv(b, t, h, V) = den > op.eps ? -dot / dc : 0.0;
      }
  std::vector<double> dqf(B * T * H * K2, 0.0), dkf(dqf.size()), dvf(B * T * H * V1);
  EosGrads g;
  g.d_expand = lcsm::view(dkf.data(), {B, T, H, K2});
  g.d_input = lcsm::view(dvf.data(), {B, T, H, V1});
  g.d_initial_state = d_initial_state;
  if (op.causal) {
    g.d_shrink = lcsm::view(dqf.data(), {B, T, H, K2});
    backward(e, dyv, d_final_state, g);
  } else {
    // y_i = q'_i^T S_final: dq'_i = S_final dy_i, and S_final's gradient d_final + sum_i q'_i dy_i^T
    // reaches k', v' and the initial state as the final-state gradient of the EOS with no outputs.
    std::vector<double> dS(N * H * K2 * V1, 0.0), zero(dy.size(), 0.0);
    const auto dSv = lcsm::view(dS.data(), {N, H, K2, V1});
    for (index_t n = 0; n < seqs.size(); ++n)
      for (index_t t = seqs[n].start; t < seqs[n].start + seqs[n].length; ++t)
        for (index_t h = 0; h < H; ++h) {
          const index_t b = seqs[n].batch;
          for (index_t d = 0; d < K2; ++d) {
            double acc = 0;
            for (index_t c = 0; c < V1; ++c) {
              acc += sv(n, h, d, c) * dyv(b, t, h, c);
              dSv(n, h, d, c) += e.shrink(b, t, h, d) * dyv(b, t, h, c);
            }
            dqf[((b * T + t) * H + h) * K2 + d] = acc;
          }
        }
    if (d_final_state.present())
      for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < K2; ++d)
            for (index_t c = 0; c < V1; ++c) dSv(n, h, d, c) += d_final_state(n, h, d, c);
    backward(e, lcsm::view(static_cast<const double*>(zero.data()), {B, T, H, V1}),
             lcsm::view(static_cast<const double*>(dS.data()), {N, H, K2, V1}), g);
  }
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t t = seqs[n].start; t < seqs[n].start + seqs[n].length; ++t)
      for (index_t h = 0; h < H; ++h) {
        const index_t b = seqs[n].batch, base = ((b * T + t) * H + h);
        const double a = mapped.angle(b, t), cs = std::cos(a), sn = std::sin(a);
        for (index_t d = 0; d < K; ++d) {
          if (dq.present())
            dq(b, t, h, d) = cosformer_phi_grad(op.feature_map, q(b, t, h, d)) *
                             (cs * dqf[base * K2 + d] + sn * dqf[base * K2 + K + d]);
          if (dk.present())
            dk(b, t, h, d) = cosformer_phi_grad(op.feature_map, k(b, t, h, d)) *
                             (cs * dkf[base * K2 + d] + sn * dkf[base * K2 + K + d]);
        }
        if (dv.present())
          for (index_t c = 0; c < V; ++c) dv(b, t, h, c) = dvf[base * V1 + c];
      }
}

}  // namespace lcsm::reference
