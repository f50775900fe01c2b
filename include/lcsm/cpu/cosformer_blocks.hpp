// cosFormer's forward block kernels on the CPU: the features, the state, the workspace and one block
// of one head, causal (lightning's block algorithm with the cos weights as the Toeplitz mask) or not
// (the whole sequence's state only). The math: the top of cpu/cosformer.hpp.
#pragma once

#include <cmath>
#include <vector>

#include "lcsm/cpu/chunked.hpp"

namespace lcsm::cpu::detail {

// phi(x) with NaN kept (x < 0 is false for NaN).
template <class S>
S cos_phi(bool relu, S x) {
  if (relu) return x < S(0) ? S(0) : x;
  return x > S(0) ? x + S(1) : std::exp(x);
}

// phi'(x) from y = phi(x): ReLU 1 where y > 0; 1 + ELU: exp(x) = y below 0, 1 above, so min(y, 1).
template <class S>
S cos_phi_grad(bool relu, S y) {
  if (relu) return y > S(0) ? S(1) : S(0);
  return y < S(1) ? y : S(1);
}

template <class T>
struct CosformerProblem {
  View<const T, 4> q, k, v;
  index_t K, V, C;
  bool relu;
  double eps;
};

// Where a sequence sits: its first token's position and M.
struct CosformerSequence {
  index_t first, M;
};

// The mask W as lightning's Decay: pw(p) = cos(pi p / 2M), p = 0..C, and its reversed run.
template <class S>
Decay<S> cos_mask(index_t M, index_t C) {
  Decay<S> d(0.0, C);
  const double m = static_cast<double>(std::max<index_t>(M, 1));
  for (index_t p = 0; p <= C; ++p) d.pw(p) = static_cast<S>(std::cos(3.14159265358979323846 * p / (2.0 * m)));
  for (index_t j = 0; j < C; ++j) d.rev(j) = d.pw(C - 1 - j);
  d.decayed = true;
  return d;
}

// S (2K x V) and z (2K): the memory of the EOS instance, split at the denominator's column.
template <class S>
struct CosState {
  Matrix<S> s;
  Vector<S> z;
  bool zero = true;
  CosState() = default;
  CosState(index_t K2, index_t V) : s(K2, V), z(K2) {}
  void set_zero() {
    s.setZero();
    z.setZero();
    zero = true;
  }
  void add(const CosState& o) {
    if (o.zero) return;
    if (zero) {
      s = o.s;
      z = o.z;
    } else {
      s += o.s;
      z += o.z;
    }
    zero = false;
  }
  void load(const View<const S, 4>& x, index_t n, index_t h) {
    const index_t V = s.cols();
    for (index_t r = 0; r < s.rows(); ++r) {
      for (index_t c = 0; c < V; ++c) s(r, c) = x(n, h, r, c);
      z(r) = x(n, h, r, V);
    }
    zero = false;
  }
  void store(const View<S, 4>& x, index_t n, index_t h) const {
    const index_t V = s.cols();
    for (index_t r = 0; r < s.rows(); ++r) {
      for (index_t c = 0; c < V; ++c) x(n, h, r, c) = zero ? S(0) : s(r, c);
      x(n, h, r, V) = zero ? S(0) : z(r);
    }
  }
};

template <class S>
struct CosformerWorkspace {
  // a, b: phi(q), phi(k); u, w: their expanded features; v, d_o, g: value-width rows.
  Matrix<S> a, b, v, o, d_o, g, u, w, scores, p, x, da, db, dv;
  Vector<S> cs, sn, den, e;
  std::vector<CosState<S>> states;
  Prefetcher pf;
  index_t K2, V;
  CosformerWorkspace(index_t C, index_t K, index_t V_)
      : a(C, K), b(C, K), v(C, V_), o(C, V_), d_o(C, V_), g(C, V_), u(C, 2 * K), w(C, 2 * K), scores(C, C), p(C, C),
        x(C, 2 * K), da(C, K), db(C, K), dv(C, V_), cs(C), sn(C), den(C), e(C), K2(2 * K), V(V_) {}
  void ensure_states(index_t n) {
    while (static_cast<index_t>(states.size()) < n) states.emplace_back(K2, V);
  }
};

// dst.topRows(rows) = phi(x[b, t0 : t0 + rows, h, :]).
template <class S, class T>
void load_phi_rows(const View<const T, 4>& x, const Sequence& sq, index_t t0, index_t rows, index_t h, bool relu,
                   Matrix<S>& dst) {
  const index_t D = x.size(3), sd = x.stride(3);
  for (index_t i = 0; i < rows; ++i) {
    const T* src = &x(sq.batch, sq.start + t0 + i, h, 0);
    S* out = dst.row(i).data();
    if (relu) {
      if (sd == 1)
        for (index_t d = 0; d < D; ++d) {
          const S y = static_cast<S>(src[d]);
          out[d] = y < S(0) ? S(0) : y;
        }
      else
        for (index_t d = 0; d < D; ++d) out[d] = cos_phi(true, static_cast<S>(src[d * sd]));
    } else {
      for (index_t d = 0; d < D; ++d) out[d] = cos_phi(false, static_cast<S>(src[d * sd]));
    }
  }
}

// out.row(i) = [x.row(i) cs_i, x.row(i) sn_i] for the first `rows` rows.
template <class S>
void expand_rows(const Matrix<S>& x, index_t rows, const Vector<S>& cs, const Vector<S>& sn, Matrix<S>& out) {
  const index_t K = x.cols();
  for (index_t i = 0; i < rows; ++i) {
    const S* in = x.row(i).data();
    S* o = out.row(i).data();
    const S c = cs(i), s = sn(i);
    for (index_t d = 0; d < K; ++d) {
      o[d] = c * in[d];
      o[K + d] = s * in[d];
    }
  }
}

// cos and sin of the angles pi p / 2M of positions first + t .. first + t + c - 1.
template <class S>
void block_angles(const CosformerSequence& cq, index_t t, index_t c, Vector<S>& cs, Vector<S>& sn) {
  const double f = 3.14159265358979323846 / (2.0 * static_cast<double>(cq.M));
  for (index_t i = 0; i < c; ++i) {
    const double ang = f * static_cast<double>(cq.first + t + i);
    cs(i) = static_cast<S>(std::cos(ang));
    sn(i) = static_cast<S>(std::sin(ang));
  }
}

// x[b, t0 + i, h, :] = num.row(i) / max(den_i, eps) (NaN in den stays NaN).
template <class T, class S>
void store_normalised(const Matrix<S>& num, const Vector<S>& den, index_t rows, S eps, const View<T, 4>& x,
                      const Sequence& sq, index_t t0, index_t h) {
  const index_t D = x.size(3), sd = x.stride(3);
  for (index_t i = 0; i < rows; ++i) {
    T* dst = &x(sq.batch, sq.start + t0 + i, h, 0);
    const S* in = num.row(i).data();
    const S r = S(1) / (den(i) < eps ? eps : den(i));
    for (index_t d = 0; d < D; ++d) dst[d * sd] = static_cast<T>(in[d] * r);
  }
}

// den_i = sum_{j <= i} scores(i, j), reading only the entries causal_scores formed.
template <class S>
void causal_row_sums(const Matrix<S>& scores, index_t c, Vector<S>& den) {
  for (index_t i = 0; i < c; ++i) {
    const S* row = &scores(i, 0);
    S acc = 0;
    for (index_t j = 0; j <= i; ++j) acc += row[j];
    den(i) = acc;
  }
}

// S += w^T v, z += w^T 1 (w the block's expanded rows).
template <class S, class MW, class MV>
void cos_advance(CosState<S>& st, const MW& w, const MV& v) {
  if (st.zero) {
    st.s.noalias() = w.transpose() * v;
    st.z.noalias() = w.colwise().sum().transpose();
    st.zero = false;
    return;
  }
  st.s.noalias() += w.transpose() * v;
  st.z.noalias() += w.colwise().sum().transpose();
}

// The state sums of tokens [begin, end) of one head from zero.
template <class T, class S>
void cos_delta(CosformerWorkspace<S>& ws, const CosformerProblem<T>& pb, const CosformerSequence& cq,
               const Sequence& sq, index_t h, index_t begin, index_t end, CosState<S>& out) {
  out.zero = true;
  for (index_t t = begin; t < end; t += pb.C) {
    const index_t c = std::min(pb.C, end - t);
    block_angles(cq, t, c, ws.cs, ws.sn);
    load_phi_rows(pb.k, sq, t, c, h, pb.relu, ws.b);
    load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
    expand_rows(ws.b, c, ws.cs, ws.sn, ws.w);
    cos_advance(out, ws.w.topRows(c), ws.v.topRows(c));
  }
  if (out.zero) out.set_zero();
}

// One causal block of one head: o = (A v + u S) / max(rowsum A + u z, eps); S, z advanced when update.
template <class T, class S>
void cos_forward_block(CosformerWorkspace<S>& ws, const CosformerProblem<T>& pb, const Decay<S>& mask, CosState<S>& st,
                       const Sequence& sq, index_t t, index_t c, index_t h, bool update, const View<T, 4>& o,
                       const NextRows& next) {
  load_phi_rows(pb.q, sq, t, c, h, pb.relu, ws.a);
  load_phi_rows(pb.k, sq, t, c, h, pb.relu, ws.b);
  load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
  Prefetcher& pf = ws.pf;
  pf.clear();
  pf.add(o, sq.batch, sq.start + t, c, h, true);
  for (const auto* x : {&pb.q, &pb.k, &pb.v}) pf.add(*x, sq.batch, sq.start + next.t, next.c, next.h, false);
  auto between = [&pf] { pf.issue_part(kPrefetchParts); };
  auto Vb = ws.v.topRows(c);
  causal_scores(ws.scores, ws.a.topRows(c), ws.b.topRows(c), c, mask, between);
  causal_times(ws.scores, false, Vb, ws.o, c, all_finite(Vb), between);
  causal_row_sums(ws.scores, c, ws.den);
  if (!st.zero) {
    expand_rows(ws.a, c, ws.cs, ws.sn, ws.u);
    auto U = ws.u.topRows(c);
    ws.o.topRows(c).noalias() += U * st.s;
    ws.den.head(c).noalias() += U * st.z;
    between();
  }
  store_normalised(ws.o, ws.den, c, static_cast<S>(pb.eps), o, sq, t, h);
  if (update) {
    expand_rows(ws.b, c, ws.cs, ws.sn, ws.w);
    cos_advance(st, ws.w.topRows(c), Vb);
  }
  pf.issue_all();
}

// One non-causal block of one head: o = u S / max(u z, eps) with the whole sequence's S, z.
template <class T, class S>
void cos_bidirectional_block(CosformerWorkspace<S>& ws, const CosformerProblem<T>& pb, const CosState<S>& st,
                             const Sequence& sq, index_t t, index_t c, index_t h, const View<T, 4>& o) {
  load_phi_rows(pb.q, sq, t, c, h, pb.relu, ws.a);
  expand_rows(ws.a, c, ws.cs, ws.sn, ws.u);
  auto U = ws.u.topRows(c);
  ws.o.topRows(c).noalias() = U * st.s;
  ws.den.head(c).noalias() = U * st.z;
  store_normalised(ws.o, ws.den, c, static_cast<S>(pb.eps), o, sq, t, h);
}

}  // namespace lcsm::cpu::detail
