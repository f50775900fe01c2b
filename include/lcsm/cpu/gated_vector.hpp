// The block kernels of the vector gate (one log-gate per token, head and key) on the CPU.
//
// Per block of c tokens (i, j from 0), G_i = sum_{r <= i} g_r in R^K inside the block (double), q
// scaled. The scores A_ij = sum_k q_ik k_jk e^{G_ik - G_jk} (j <= i) do not factor into
// (q e^{G_i}) (k e^{-G_j}) without overflow, so the block is cut into sub-chunks of s tokens:
//   j in an earlier sub-chunk than i, B = G at the end of the sub-chunk before i's:
//     A_ij = (q_i (.) e^{G_i - B}) . (k_j (.) e^{B - G_j})           a GEMM per sub-chunk row
//   j in i's sub-chunk: A_ij = q_i . (k_j (.) prod_{r=j+1..i} a_r), a_r = e^{g_r}   (running products)
//   O  = A V + (Q (.) e^{G_i}) S,      S' = diag(e^{G_c}) S + (K (.) e^{G_c - G_j})^T V
// Backward, P = dO V^T (lower triangle), dS' the state gradient after the block:
//   dQ_i = sum_{j<=i} P_ij k_j (.) e^{G_i - G_j} + e^{G_i} (.) (dO S^T)_i
//   dK_j = sum_{i>=j} P_ij q_i (.) e^{G_i - G_j} + e^{G_c - G_j} (.) (V dS'^T)_j
//   dV = A^T dO + (K (.) e^{G_c - G_j}) dS',      dS = diag(e^{G_c}) dS' + (Q (.) e^{G_i})^T dO
// with the same split (dK's earlier-sub-chunk terms anchored at the end of j's sub-chunk).
//
// Exponentials: per token, L_i = e^{G_i - B_I} and R_i = e^{E_I - G_i} (B_I, E_I: G before and at
// the end of i's sub-chunk I) and a_i; every other factor is a product of these and of the
// sub-chunk totals T_I = L_{e_I - 1}, all in (0, 1]:
//   e^{B_I - G_j} = R_j prod_{J < J' < I} T_J',  e^{G_i} = L_i prod_{J < I} T_J,  e^{G_c - G_j} = R_j prod_{J' > J}
//   T_J'.
// Every exponential has an argument <= 0; products of factors <= 1 can only underflow where the
// exact value is below the smallest normal number too.
#pragma once

#include "lcsm/cpu/gated_common.hpp"

namespace lcsm::cpu::detail {

struct VectorGateKernel {
  // G (ws.G); L, R (ws.lf, ws.rf); pre.row(I) = e^{B_I} for I = 0..n (row n: e^{G_c}), post.row(I) =
  // e^{G_c - E_I}; and with `decay` the per-token a_i = e^{g_i} (ws.decay, rows after a sub-chunk's first).
  template <class T, class S>
  static void prepare(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const Sequence& sq, index_t t, index_t c,
                      index_t h, bool with_decay) {
    load_cumulative_gate(pb, sq, t, c, h, ws.G);
    const index_t s = pb.sub, K = pb.K, n = (c + s - 1) / s;
    for (index_t b = 0; b < c; b += s) {
      const index_t e = std::min(c, b + s);
      const double* B = b ? ws.G.row(b - 1).data() : ws.zeros.data();
      const double* E = ws.G.row(e - 1).data();
      for (index_t i = b; i < e; ++i) {
        exp_of_difference<S>(ws.G.row(i).data(), B, K, &ws.lf(i, 0), ws.drow);
        exp_of_difference<S>(E, ws.G.row(i).data(), K, &ws.rf(i, 0), ws.drow);
        if (with_decay && i > b)
          exp_of_difference<S>(ws.G.row(i).data(), ws.G.row(i - 1).data(), K, &ws.decay(i, 0), ws.drow);
      }
    }
    ws.pre.row(0).setOnes();
    for (index_t I = 1; I <= n; ++I) ws.pre.row(I) = ws.pre.row(I - 1).cwiseProduct(ws.lf.row(std::min(c, I * s) - 1));
    ws.post.row(n - 1).setOnes();
    for (index_t I = n - 2; I >= 0; --I)
      ws.post.row(I) = ws.post.row(I + 1).cwiseProduct(ws.lf.row(std::min(c, (I + 2) * s) - 1));
  }

  // ws.y.topRows(b) = K (.) e^{B_I - G_j} for the anchor of the sub-chunk starting at b, from the
  // rows it held for the previous sub-chunk (starting at b - s): those times T of that sub-chunk,
  // and that sub-chunk's own K (.) R.
  template <class S>
  static void extend_keys(GatedWorkspace<S>& ws, index_t b, index_t s) {
    const index_t prev = b - s;
    const auto Tprev = ws.lf.row(b - 1);
    for (index_t j = 0; j < prev; ++j) ws.y.row(j) = ws.y.row(j).cwiseProduct(Tprev);
    for (index_t j = prev; j < b; ++j) ws.y.row(j) = ws.k.row(j).cwiseProduct(ws.rf.row(j));
  }

  // ws.a = the gated scores A of Q (ws.q) and K (ws.k), sub-chunk by sub-chunk; x, y scratch.
  template <class S, class F = NoPrefetch>
  static void scores(GatedWorkspace<S>& ws, index_t c, index_t s, F&& between = {}) {
    for (index_t b = 0; b < c; b += s) {
      const index_t e = std::min(c, b + s);
      if (b > 0) {
        extend_keys(ws, b, s);
        for (index_t i = b; i < e; ++i) ws.x.row(i) = ws.q.row(i).cwiseProduct(ws.lf.row(i));
        ws.a.block(b, 0, e - b, b).noalias() = ws.x.middleRows(b, e - b) * ws.y.topRows(b).transpose();
      }
      for (index_t i = b; i < e; ++i) {
        ws.w = ws.q.row(i);
        ws.a(i, i) = ws.w.dot(ws.k.row(i));
        for (index_t j = i - 1; j >= b; --j) {
          ws.w = ws.w.cwiseProduct(ws.decay.row(j + 1));
          ws.a(i, j) = ws.w.dot(ws.k.row(j));
        }
        for (index_t j = i + 1; j < e; ++j) ws.a(i, j) = S(0);
      }
      between();
    }
  }

  // out.row(i) = x.row(i) (.) e^{G_i} = x (.) L_i (.) pre_I.
  template <class S, class Out, class X>
  static void times_exp_G(GatedWorkspace<S>& ws, Out&& out, const X& x, index_t i, index_t s) {
    out = x.cwiseProduct(ws.lf.row(i)).cwiseProduct(ws.pre.row(i / s));
  }

  // state = diag(e^{G_c}) state, each row's factor from the double G (DecayFactor), not the float
  // product pre.row(n): a state decayed block after block must not round the same way in every block.
  template <class S>
  static void decay_state(const GatedWorkspace<S>& ws, Matrix<S>& state, index_t c) {
    const double* Gc = ws.G.row(c - 1).data();
    for (index_t r = 0; r < state.rows(); ++r) apply_decay(state.row(r), DecayFactor<S>(Gc[r]));
  }

  // state = diag(e^{G_c}) state + (K (.) e^{G_c - G_j})^T V.
  template <class S, class MV>
  static void advance(GatedWorkspace<S>& ws, Matrix<S>& state, bool& zero, const MV& Vb, index_t c, index_t s) {
    for (index_t j = 0; j < c; ++j)
      ws.kd.row(j) = ws.k.row(j).cwiseProduct(ws.rf.row(j)).cwiseProduct(ws.post.row(j / s));
    if (zero) {
      state.noalias() = ws.kd.topRows(c).transpose() * Vb;
      zero = false;
      return;
    }
    decay_state(ws, state, c);
    state.noalias() += ws.kd.topRows(c).transpose() * Vb;
  }

  template <class T, class S>
  static void forward_block(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const Sequence& sq, index_t h,
                            index_t t, index_t c, Matrix<S>& state, bool& zero, bool update, const View<T, 4>& o,
                            const NextRows& next) {
    const bool out = o.present();
    const index_t s = pb.sub;
    prepare(ws, pb, sq, t, c, h, out);
    const index_t b = sq.batch, t0 = sq.start + t;
    load_rows(pb.k, b, t0, c, h, S(1), ws.k);
    load_rows(pb.v, b, t0, c, h, S(1), ws.v);
    if (out) load_rows(pb.q, b, t0, c, h, static_cast<S>(pb.scale), ws.q);
    prefetch_forward(ws.pf, pb, sq, t, c, h, o, next);
    auto between = [&ws] { ws.pf.issue_part(kPrefetchParts); };
    auto Vb = ws.v.topRows(c);
    if (out) {
      scores(ws, c, s, between);
      panel_times(ws.a, false, Vb, ws.o, c, s, all_finite(Vb), between);
      if (!zero) {
        for (index_t i = 0; i < c; ++i) times_exp_G(ws, ws.qd.row(i), ws.q.row(i), i, s);
        ws.o.topRows(c).noalias() += ws.qd.topRows(c) * state;
      }
      between();
      store_rows(ws.o, c, S(1), o, b, t0, h);
    }
    if (update) advance(ws, state, zero, Vb, c, s);
    ws.pf.issue_all();
  }

  template <class T, class S>
  static void dq_block(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const View<const T, 4>& d_o,
                       const Sequence& sq, index_t h, index_t t, index_t c, Matrix<S>& state, bool& zero, bool update,
                       const View<T, 4>& dq, const View<S, 4>& dg) {
    prepare(ws, pb, sq, t, c, h, true);
    const index_t b = sq.batch, t0 = sq.start + t, s = pb.sub, K = pb.K;
    const S scale = static_cast<S>(pb.scale);
    load_rows(pb.q, b, t0, c, h, scale, ws.q);
    load_rows(pb.k, b, t0, c, h, S(1), ws.k);
    load_rows(pb.v, b, t0, c, h, S(1), ws.v);
    load_rows(d_o, b, t0, c, h, S(1), ws.d_o);
    auto Vb = ws.v.topRows(c);
    auto dO = ws.d_o.topRows(c);
    panel_scores(ws.p, dO, Vb, c, s, NoMask{});
    for (index_t i0 = 0; i0 < c; i0 += s) {
      const index_t e = std::min(c, i0 + s);
      if (i0 > 0) {
        extend_keys(ws, i0, s);
        ws.dq.middleRows(i0, e - i0).noalias() = ws.p.block(i0, 0, e - i0, i0) * ws.y.topRows(i0);
        for (index_t i = i0; i < e; ++i) ws.dq.row(i) = ws.dq.row(i).cwiseProduct(ws.lf.row(i));
      } else {
        ws.dq.middleRows(i0, e - i0).setZero();
      }
      for (index_t i = i0; i < e; ++i) {
        ws.w = ws.ones;
        ws.dq.row(i) += ws.p(i, i) * ws.k.row(i);
        for (index_t j = i - 1; j >= i0; --j) {
          ws.w = ws.w.cwiseProduct(ws.decay.row(j + 1));
          ws.dq.row(i) += ws.p(i, j) * ws.k.row(j).cwiseProduct(ws.w);
        }
      }
    }
    if (!zero) {
      ws.x.topRows(c).noalias() = dO * state.transpose();
      for (index_t i = 0; i < c; ++i) {
        times_exp_G(ws, ws.w, ws.x.row(i), i, s);
        ws.dq.row(i) += ws.w;
      }
    }
    if (dg.present())
      for (index_t i = 0; i < c; ++i)
        for (index_t d = 0; d < K; ++d) dg(b, t0 + i, h, d) = ws.q(i, d) * ws.dq(i, d);
    store_rows(ws.dq, c, scale, dq, b, t0, h);
    if (update) advance(ws, state, zero, Vb, c, s);
  }

  template <class T, class S>
  static void dk_block(GatedWorkspace<S>& ws, const GatedProblem<T, S>& pb, const View<const T, 4>& d_o,
                       const Sequence& sq, index_t h, index_t t, index_t c, Matrix<S>& dstate, bool& zero, bool update,
                       const View<T, 4>* dk, const View<T, 4>* dv, const View<S, 4>& dg, double* acc) {
    prepare(ws, pb, sq, t, c, h, dk != nullptr);
    const index_t b = sq.batch, t0 = sq.start + t, s = pb.sub, K = pb.K;
    load_rows(pb.q, b, t0, c, h, static_cast<S>(pb.scale), ws.q);
    load_rows(d_o, b, t0, c, h, S(1), ws.d_o);
    auto dO = ws.d_o.topRows(c);
    if (dk) {
      load_rows(pb.k, b, t0, c, h, S(1), ws.k);
      load_rows(pb.v, b, t0, c, h, S(1), ws.v);
      auto Vb = ws.v.topRows(c);
      auto dK = ws.dk.topRows(c);
      auto dV = ws.dv.topRows(c);
      panel_scores(ws.p, dO, Vb, c, s, NoMask{});
      scores(ws, c, s);
      panel_times(ws.a, true, dO, ws.dv, c, s, all_finite(dO));
      // Sub-chunks from the last: x.middleRows(e, c - e) = Q (.) e^{G_i - E_J} for the later tokens.
      const index_t last = ((c - 1) / s) * s;
      for (index_t j0 = last; j0 >= 0; j0 -= s) {
        const index_t e = std::min(c, j0 + s);
        if (e < c) {
          const index_t e2 = std::min(c, e + s);  // the sub-chunk after this one: [e, e2)
          const auto Tnext = ws.lf.row(e2 - 1);
          for (index_t i = e2; i < c; ++i) ws.x.row(i) = ws.x.row(i).cwiseProduct(Tnext);
          for (index_t i = e; i < e2; ++i) ws.x.row(i) = ws.q.row(i).cwiseProduct(ws.lf.row(i));
          ws.dk.middleRows(j0, e - j0).noalias() =
              ws.p.block(e, j0, c - e, e - j0).transpose() * ws.x.middleRows(e, c - e);
          for (index_t j = j0; j < e; ++j) ws.dk.row(j) = ws.dk.row(j).cwiseProduct(ws.rf.row(j));
        } else {
          ws.dk.middleRows(j0, e - j0).setZero();
        }
        for (index_t j = j0; j < e; ++j) {
          ws.w = ws.ones;
          ws.dk.row(j) += ws.p(j, j) * ws.q.row(j);
          for (index_t i = j + 1; i < e; ++i) {
            ws.w = ws.w.cwiseProduct(ws.decay.row(i));
            ws.dk.row(j) += ws.p(i, j) * ws.q.row(i).cwiseProduct(ws.w);
          }
        }
      }
      if (!zero) {
        ws.x.topRows(c).noalias() = Vb * dstate.transpose();
        for (index_t j = 0; j < c; ++j) {
          ws.w = ws.rf.row(j).cwiseProduct(ws.post.row(j / s));  // e^{G_c - G_j}
          dK.row(j) += ws.x.row(j).cwiseProduct(ws.w);
          ws.kd.row(j) = ws.k.row(j).cwiseProduct(ws.w);
        }
        dV.noalias() += ws.kd.topRows(c) * dstate;
      }
      if (dg.present())
        for (index_t j = c - 1; j >= 0; --j)
          for (index_t d = 0; d < K; ++d) {
            acc[d] += static_cast<double>(dg(b, t0 + j, h, d)) - static_cast<double>(ws.k(j, d) * ws.dk(j, d));
            dg(b, t0 + j, h, d) = static_cast<S>(acc[d]);
          }
      store_rows(ws.dk, c, S(1), *dk, b, t0, h);
      store_rows(ws.dv, c, S(1), *dv, b, t0, h);
    }
    if (update) {
      for (index_t i = 0; i < c; ++i) times_exp_G(ws, ws.qd.row(i), ws.q.row(i), i, s);
      if (zero) {
        dstate.noalias() = ws.qd.topRows(c).transpose() * dO;
        zero = false;
      } else {
        decay_state(ws, dstate, c);
        dstate.noalias() += ws.qd.topRows(c).transpose() * dO;
      }
    }
  }
};

}  // namespace lcsm::cpu::detail
