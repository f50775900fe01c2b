// The block kernels of the scalar gate (one log-gate g_t per token and head) on the CPU.
//
// Per block of c tokens (i, j from 0), G_i = sum_{r <= i} g_r inside the block (double), q scaled:
//   O  = [(Q K^T) (.) D] V + diag(e^{G_i}) Q S,      D_ij = e^{G_i - G_j} for i >= j, else 0 (a select)
//   S' = e^{G_c} S + (diag(e^{G_c - G_j}) K)^T V       (G_c = G_{c-1}, the block's total)
// Backward, dS' the gradient of the state after the block, P = (dO V^T) (.) D:
//   dQ = P K + diag(e^{G_i}) dO S^T,       dK = P^T Q + diag(e^{G_c - G_j}) V dS'^T
//   dV = [(Q K^T) (.) D]^T dO + diag(e^{G_c - G_j}) K dS',   dS = e^{G_c} dS' + (diag(e^{G_i}) Q)^T dO
// Every exponential has an argument <= 0. The gate's gradient per token is r_t = q_t . dq_t - k_t . dk_t,
// summed from the end of the sequence (gated.hpp).
#pragma once

#include "lcsm/cpu/gated_common.hpp"

namespace lcsm::cpu::detail {

struct ScalarGateKernel {
  // The block's gate factors: G (ws.G), f = e^{G_i} (query side), ff = e^{G_c - G_j} (key side), and
  // the decay mask D (ws.mask, lower triangle) when `with_mask`. Returns e^{G_c} (DecayFactor).
  template <class T, class S>
  static DecayFactor<S> prepare(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const Sequence& sq, index_t t,
                                index_t c, index_t h, bool with_mask) {
    load_cumulative_gate(pb, sq, t, c, h, ws.G);
    const double* G = ws.G.data();  // W = 1: column vector, contiguous
    const double Gc = G[c - 1];
    for (index_t i = 0; i < c; ++i) {
      ws.f(i) = static_cast<S>(std::exp(G[i]));
      ws.ff(i) = static_cast<S>(std::exp(Gc - G[i]));
    }
    if (with_mask)
      for (index_t i = 0; i < c; ++i) exp_of_difference<S>(G[i], G, i + 1, &ws.mask(i, 0), ws.drow);
    return DecayFactor<S>(Gc);
  }

  static index_t panel(index_t c) { return causal_panel(c); }

  // S = e^{G_c} S + Kd^T V (S = Kd^T V when S is zero).
  template <class S, class MK, class MV>
  static void advance(Matrix<S>& state, bool& zero, const DecayFactor<S>& total, const MK& Kd, const MV& Vb) {
    if (zero) {
      state.noalias() = Kd.transpose() * Vb;
      zero = false;
      return;
    }
    apply_decay(state, total);
    state.noalias() += Kd.transpose() * Vb;
  }

  // One block of the forward; o absent: only the state advances.
  template <class T, class S>
  static void forward_block(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const Sequence& sq, index_t h,
                            index_t t, index_t c, Matrix<S>& state, bool& zero, bool update, const View<T, 4>& o,
                            const NextRows& next) {
    const bool out = o.present();
    const DecayFactor<S> total = prepare(ws, pb, sq, t, c, h, out);
    const index_t b = sq.batch, t0 = sq.start + t;
    load_rows_decayed(pb.k, b, t0, c, h, S(1), ws.k, ws.ff.data(), ws.kd);
    load_rows(pb.v, b, t0, c, h, S(1), ws.v);
    if (out) load_rows_decayed(pb.q, b, t0, c, h, static_cast<S>(pb.scale), ws.q, ws.f.data(), ws.qd);
    prefetch_forward(ws.pf, pb, sq, t, c, h, o, next);
    auto between = [&ws] { ws.pf.issue_part(kPrefetchParts); };
    auto Vb = ws.v.topRows(c);
    if (out) {
      auto Q = ws.q.topRows(c);
      auto K = ws.k.topRows(c);
      panel_scores(ws.a, Q, K, c, panel(c), EntryMask<Matrix<S>>{ws.mask}, between);
      panel_times(ws.a, false, Vb, ws.o, c, panel(c), all_finite(Vb), between);
      if (!zero) ws.o.topRows(c).noalias() += ws.qd.topRows(c) * state;
      between();
      store_rows(ws.o, c, S(1), o, b, t0, h);
    }
    if (update) advance(state, zero, total, ws.kd.topRows(c), Vb);
    ws.pf.issue_all();
  }

  // One block of the dq pass (state: before the block). dg, when present, gets r_i = q_i . dq_i.
  template <class T, class S>
  static void dq_block(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const View<const T, 4>& d_o,
                       const Sequence& sq, index_t h, index_t t, index_t c, Matrix<S>& state, bool& zero, bool update,
                       const View<T, 4>& dq, const View<S, 4>& dg) {
    const DecayFactor<S> total = prepare(ws, pb, sq, t, c, h, true);
    const index_t b = sq.batch, t0 = sq.start + t;
    const S scale = static_cast<S>(pb.scale);
    load_rows(pb.q, b, t0, c, h, scale, ws.q);
    load_rows_decayed(pb.k, b, t0, c, h, S(1), ws.k, ws.ff.data(), ws.kd);
    load_rows(pb.v, b, t0, c, h, S(1), ws.v);
    load_rows_decayed(d_o, b, t0, c, h, S(1), ws.d_o, ws.f.data(), ws.dod);  // e^{G_i} dO
    auto K = ws.k.topRows(c);
    auto Vb = ws.v.topRows(c);
    auto dO = ws.d_o.topRows(c);
    auto dQ = ws.dq.topRows(c);
    panel_scores(ws.p, dO, Vb, c, panel(c), EntryMask<Matrix<S>>{ws.mask});
    panel_times(ws.p, false, K, ws.dq, c, panel(c), all_finite(K));
    if (!zero) dQ.noalias() += ws.dod.topRows(c) * state.transpose();
    if (dg.present())
      for (index_t i = 0; i < c; ++i) dg(b, t0 + i, h, 0) = ws.q.row(i).dot(dQ.row(i));
    store_rows(ws.dq, c, scale, dq, b, t0, h);
    if (update) advance(state, zero, total, ws.kd.topRows(c), Vb);
  }

  // One block of the dk, dv pass (dstate: the state gradient after the block), walking backwards.
  // With dk: dk, dv of the block, and when dg is present dg_j = acc += r_j - k_j . dk_j (j from the
  // end). Without dk only the state gradient moves back (dS = e^{G_c} dS' + Qd^T dO).
  template <class T, class S>
  static void dk_block(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const View<const T, 4>& d_o,
                       const Sequence& sq, index_t h, index_t t, index_t c, Matrix<S>& dstate, bool& zero, bool update,
                       const View<T, 4>* dk, const View<T, 4>* dv, const View<S, 4>& dg, double* acc) {
    const DecayFactor<S> total = prepare(ws, pb, sq, t, c, h, dk != nullptr);
    const index_t b = sq.batch, t0 = sq.start + t;
    load_rows_decayed(pb.q, b, t0, c, h, static_cast<S>(pb.scale), ws.q, ws.f.data(), ws.qd);
    load_rows(d_o, b, t0, c, h, S(1), ws.d_o);
    auto Q = ws.q.topRows(c);
    auto dO = ws.d_o.topRows(c);
    if (dk) {
      load_rows_decayed(pb.k, b, t0, c, h, S(1), ws.k, ws.ff.data(), ws.kd);
      load_rows_decayed(pb.v, b, t0, c, h, S(1), ws.v, ws.ff.data(), ws.vd);
      auto K = ws.k.topRows(c);
      auto Vb = ws.v.topRows(c);
      auto dK = ws.dk.topRows(c);
      auto dV = ws.dv.topRows(c);
      panel_scores(ws.p, dO, Vb, c, panel(c), EntryMask<Matrix<S>>{ws.mask});
      panel_scores(ws.a, Q, K, c, panel(c), EntryMask<Matrix<S>>{ws.mask});
      panel_times(ws.p, true, Q, ws.dk, c, panel(c), all_finite(Q));
      panel_times(ws.a, true, dO, ws.dv, c, panel(c), all_finite(dO));
      if (!zero) {
        dK.noalias() += ws.vd.topRows(c) * dstate.transpose();
        dV.noalias() += ws.kd.topRows(c) * dstate;
      }
      if (dg.present())
        for (index_t j = c - 1; j >= 0; --j) {
          acc[0] += static_cast<double>(dg(b, t0 + j, h, 0)) - static_cast<double>(K.row(j).dot(dK.row(j)));
          dg(b, t0 + j, h, 0) = static_cast<S>(acc[0]);
        }
      store_rows(ws.dk, c, S(1), *dk, b, t0, h);
      store_rows(ws.dv, c, S(1), *dv, b, t0, h);
    }
    if (update) advance(dstate, zero, total, ws.qd.topRows(c), dO);
  }
};

}  // namespace lcsm::cpu::detail
