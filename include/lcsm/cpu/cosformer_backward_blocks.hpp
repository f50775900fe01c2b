// cosFormer's backward block kernels on the CPU: the forward walk of backward (o, den recomputed;
// g, e; dq) and the backward walk (dk, dv, the state gradient). The math: the top of
// cpu/cosformer.hpp.
#pragma once

#include "lcsm/cpu/cosformer_blocks.hpp"

namespace lcsm::cpu::detail {

// Backward pieces. ge: [B, T, H, V + 1] scratch holding g (columns 0..V-1) and e (column V).

// P(i, j) += e_i W(i - j) for j <= i, turning causal_scores' (g v^T) (.) W into (g v^T + e 1^T) (.) W.
template <class S>
void add_row_weights(Matrix<S>& p, const Vector<S>& e, index_t c, const Decay<S>& mask) {
  const index_t C = mask.chunk();
  for (index_t i = 0; i < c; ++i) {
    S* row = &p(i, 0);
    const S* f = mask.rev.data() + (C - 1 - i);
    const S ei = e(i);
    for (index_t j = 0; j <= i; ++j) row[j] += ei * f[j];
  }
}

// From num (ws.o) and den: o = num / max(den, eps), g = do / max(den, eps), e = -(do . o) / max(den, eps)
// (0 where den <= eps: the clamp's gradient). g replaces ws.g, e ws.e.
template <class S>
void output_grads(CosformerWorkspace<S>& ws, index_t c, S eps) {
  const index_t V = ws.V;
  for (index_t i = 0; i < c; ++i) {
    const S den = ws.den(i), r = S(1) / (den < eps ? eps : den);
    const S* num = ws.o.row(i).data();
    const S* dout = ws.d_o.row(i).data();
    S* g = ws.g.row(i).data();
    S dot = 0;
    for (index_t d = 0; d < V; ++d) {
      g[d] = dout[d] * r;
      dot += dout[d] * num[d];
    }
    ws.e(i) = den > eps ? -dot * r * r : S(0);
  }
}

template <class S>
void store_ge(const CosformerWorkspace<S>& ws, index_t c, const View<S, 4>& ge, const Sequence& sq, index_t t,
              index_t h) {
  for (index_t i = 0; i < c; ++i) {
    S* dst = &ge(sq.batch, sq.start + t + i, h, 0);
    const S* g = ws.g.row(i).data();
    for (index_t d = 0; d < ws.V; ++d) dst[d] = g[d];
    dst[ws.V] = ws.e(i);
  }
}
template <class S>
void load_ge(CosformerWorkspace<S>& ws, index_t c, const View<S, 4>& ge, const Sequence& sq, index_t t, index_t h) {
  for (index_t i = 0; i < c; ++i) {
    const S* src = &ge(sq.batch, sq.start + t + i, h, 0);
    S* g = ws.g.row(i).data();
    for (index_t d = 0; d < ws.V; ++d) g[d] = src[d];
    ws.e(i) = src[ws.V];
  }
}

// da += cs (.) X_cos + sn (.) X_sin with X = g S^T + e z^T: the state's share of the query gradient.
template <class S>
void add_state_query_grad(CosformerWorkspace<S>& ws, const CosState<S>& st, index_t c) {
  const index_t K = ws.K2 / 2;
  ws.x.topRows(c).noalias() = ws.g.topRows(c) * st.s.transpose();
  ws.x.topRows(c).noalias() += ws.e.head(c) * st.z.transpose();
  for (index_t i = 0; i < c; ++i) {
    const S* x = ws.x.row(i).data();
    S* da = ws.da.row(i).data();
    for (index_t d = 0; d < K; ++d) da[d] += ws.cs(i) * x[d] + ws.sn(i) * x[K + d];
  }
}

// The state gradient's share of the key and value gradients: dv += w dS, db += cs (.) Y_cos + sn (.) Y_sin
// with Y = v dS^T + 1 dz^T.
template <class S>
void add_state_key_grads(CosformerWorkspace<S>& ws, const CosState<S>& ds, index_t c) {
  const index_t K = ws.K2 / 2;
  expand_rows(ws.b, c, ws.cs, ws.sn, ws.w);
  ws.dv.topRows(c).noalias() += ws.w.topRows(c) * ds.s;
  ws.x.topRows(c).noalias() = ws.v.topRows(c) * ds.s.transpose();
  for (index_t i = 0; i < c; ++i) {
    const S* y = ws.x.row(i).data();
    S* db = ws.db.row(i).data();
    for (index_t d = 0; d < K; ++d) db[d] += ws.cs(i) * (y[d] + ds.z(d)) + ws.sn(i) * (y[K + d] + ds.z(K + d));
  }
}

// dS += u^T g, dz += u^T e (u = ws.u, already expanded).
template <class S>
void accumulate_dstate(CosformerWorkspace<S>& ws, CosState<S>& ds, index_t c) {
  auto U = ws.u.topRows(c);
  if (ds.zero) {
    ds.s.noalias() = U.transpose() * ws.g.topRows(c);
    ds.z.noalias() = U.transpose() * ws.e.head(c);
    ds.zero = false;
    return;
  }
  ds.s.noalias() += U.transpose() * ws.g.topRows(c);
  ds.z.noalias() += U.transpose() * ws.e.head(c);
}

// x[b, t0 + i, h, :] = phi'(y_i) (.) grad_i, y = phi of the input (ws.a or ws.b).
template <class T, class S>
void store_feature_grad(const Matrix<S>& grad, const Matrix<S>& y, index_t rows, bool relu, const View<T, 4>& x,
                        const Sequence& sq, index_t t0, index_t h) {
  const index_t D = x.size(3), sd = x.stride(3);
  for (index_t i = 0; i < rows; ++i) {
    T* dst = &x(sq.batch, sq.start + t0 + i, h, 0);
    const S* gr = grad.row(i).data();
    const S* yy = y.row(i).data();
    for (index_t d = 0; d < D; ++d) dst[d * sd] = static_cast<T>(cos_phi_grad(relu, yy[d]) * gr[d]);
  }
}

// One block of one head of the forward walk of backward: recomputes o, den; g, e (kept in ge for
// causal); dq. Causal: from the state before the block (advanced when update); non-causal: from the
// whole sequence's state. gamma (may be null) accumulates u^T [g, e], the block's share of dS.
template <class T, class S>
void cos_backward_queries_block(CosformerWorkspace<S>& ws, const CosformerProblem<T>& pb, bool causal,
                                const Decay<S>& mask, CosState<S>& st, CosState<S>* gamma, const Sequence& sq,
                                index_t t, index_t c, index_t h, bool update, const View<const T, 4>& d_o,
                                const View<T, 4>& dq, const View<S, 4>& ge) {
  load_phi_rows(pb.q, sq, t, c, h, pb.relu, ws.a);
  load_rows(d_o, sq.batch, sq.start + t, c, h, S(1), ws.d_o);
  expand_rows(ws.a, c, ws.cs, ws.sn, ws.u);
  auto U = ws.u.topRows(c);
  auto none = [] {};
  if (causal) {
    load_phi_rows(pb.k, sq, t, c, h, pb.relu, ws.b);
    load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
    auto Vb = ws.v.topRows(c);
    causal_scores(ws.scores, ws.a.topRows(c), ws.b.topRows(c), c, mask, none);
    causal_times(ws.scores, false, Vb, ws.o, c, all_finite(Vb), none);
    causal_row_sums(ws.scores, c, ws.den);
    if (!st.zero) {
      ws.o.topRows(c).noalias() += U * st.s;
      ws.den.head(c).noalias() += U * st.z;
    }
  } else {
    ws.o.topRows(c).noalias() = U * st.s;
    ws.den.head(c).noalias() = U * st.z;
  }
  output_grads(ws, c, static_cast<S>(pb.eps));
  if (causal) {
    store_ge(ws, c, ge, sq, t, h);
    causal_scores(ws.p, ws.g.topRows(c), ws.v.topRows(c), c, mask, none);
    add_row_weights(ws.p, ws.e, c, mask);
    auto Bk = ws.b.topRows(c);
    causal_times(ws.p, false, Bk, ws.da, c, all_finite(Bk), none);
  } else {
    ws.da.topRows(c).setZero();
  }
  if (!st.zero) add_state_query_grad(ws, st, c);
  store_feature_grad(ws.da, ws.a, c, pb.relu, dq, sq, t, h);
  if (gamma) accumulate_dstate(ws, *gamma, c);
  if (causal && update) {
    expand_rows(ws.b, c, ws.cs, ws.sn, ws.w);
    cos_advance(st, ws.w.topRows(c), ws.v.topRows(c));
  }
}

// One block of one head of the backward walk: dk, dv from the state gradient after the block (ds),
// which then moves before the block when update. Causal blocks add their own scores.
template <class T, class S>
void cos_backward_keys_block(CosformerWorkspace<S>& ws, const CosformerProblem<T>& pb, bool causal,
                             const Decay<S>& mask, CosState<S>& ds, const Sequence& sq, index_t t, index_t c, index_t h,
                             bool update, const View<S, 4>& ge, const View<T, 4>& dk, const View<T, 4>& dv) {
  load_phi_rows(pb.k, sq, t, c, h, pb.relu, ws.b);
  load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
  auto none = [] {};
  if (causal) {
    load_phi_rows(pb.q, sq, t, c, h, pb.relu, ws.a);
    load_ge(ws, c, ge, sq, t, h);
    auto A = ws.a.topRows(c);
    auto G = ws.g.topRows(c);
    causal_scores(ws.scores, A, ws.b.topRows(c), c, mask, none);
    causal_scores(ws.p, G, ws.v.topRows(c), c, mask, none);
    add_row_weights(ws.p, ws.e, c, mask);
    causal_times(ws.p, true, A, ws.db, c, all_finite(A), none);
    causal_times(ws.scores, true, G, ws.dv, c, all_finite(G), none);
  } else {
    ws.db.topRows(c).setZero();
    ws.dv.topRows(c).setZero();
  }
  if (!ds.zero) add_state_key_grads(ws, ds, c);
  store_feature_grad(ws.db, ws.b, c, pb.relu, dk, sq, t, h);
  store_rows(ws.dv, c, S(1), dv, sq.batch, sq.start + t, h);
  if (causal && update) {
    expand_rows(ws.a, c, ws.cs, ws.sn, ws.u);
    accumulate_dstate(ws, ds, c);
  }
}

}  // namespace lcsm::cpu::detail
