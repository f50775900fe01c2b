// Lightning attention as an EOS instance, evaluated by the float64 reference:
// shrink = scale * q, expand = k, input = v, oscillation = exp(g_h) per head.
#pragma once

#include <vector>

#include "lcsm/ops/lightning.hpp"
#include "lcsm/reference/eos.hpp"

namespace lcsm::reference {

// Owns the scaled queries and the per-head log-decays the EOS views point into.
class LightningEos {
 public:
  LightningEos(const LightningAttention& op, View<const double, 4> q, View<const double, 4> k, View<const double, 4> v,
               View<const double, 4> initial_state = {}, CuSeqlens cu = {})
      : scale_(op.scale_for(q.size(3))), g_(op.log_decay) {
    op.check("lcsm::reference::LightningEos", q.size(2));
    const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
    scaled_q_.resize(B * T * H * K);
    auto s = lcsm::view(scaled_q_.data(), {B, T, H, K});
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < K; ++d) s(b, t, h, d) = scale_ * q(b, t, h, d);
    eos_.shrink = s;
    eos_.expand = k;
    eos_.input = v;
    eos_.log_decay = broadcast_head(g_.data(), B, T, H, K);
    eos_.initial_state = initial_state;
    eos_.cu_seqlens = cu;
  }
  LightningEos(const LightningEos&) = delete;
  LightningEos& operator=(const LightningEos&) = delete;

  const Eos& eos() const { return eos_; }
  double scale() const { return scale_; }

 private:
  double scale_;
  std::vector<double> g_, scaled_q_;
  Eos eos_;
};

struct LightningGrads {
  View<double, 4> dq, dk, dv, d_initial_state;  // each absent view is skipped
  std::vector<double> d_log_decay;              // [H], filled by lightning_backward
};

inline void lightning_forward(const LightningAttention& op, View<const double, 4> q, View<const double, 4> k,
                              View<const double, 4> v, View<double, 4> o, View<const double, 4> initial_state = {},
                              View<double, 4> final_state = {}, CuSeqlens cu = {}) {
  const LightningEos mapped(op, q, k, v, initial_state, cu);
  recurrent(mapped.eos(), o, final_state);
}

inline LightningGrads lightning_backward(const LightningAttention& op, View<const double, 4> q, View<const double, 4> k,
                                         View<const double, 4> v, View<const double, 4> d_o, View<double, 4> dq,
                                         View<double, 4> dk, View<double, 4> dv,
                                         View<const double, 4> initial_state = {},
                                         View<const double, 4> d_final_state = {}, View<double, 4> d_initial_state = {},
                                         CuSeqlens cu = {}) {
  const LightningEos mapped(op, q, k, v, initial_state, cu);
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
  LightningGrads out{dq, dk, dv, d_initial_state, {}};
  out.d_log_decay =
      reduce_log_decay_grad(lcsm::view(static_cast<const double*>(dg.data()), {B, T, H, K}), Oscillation::head);
  return out;
}

}  // namespace lcsm::reference
