// cosFormer on the CPU: lightning's block algorithm with the cos re-weighting as the causal mask.
//
// Per (sequence, head), blocks of C tokens; a = phi(q), b = phi(k) (C x K), cs, sn the cos and sin
// of each token's angle pi p / 2M, and the expanded features u = [a cs, a sn], w = [b cs, b sn]
// (C x 2K). S (2K x V) and z (2K) are the state before the block. Since
// w_ij = cos(pi (p_i - p_j) / 2M) depends on i - j only, it is a Toeplitz mask exactly like
// lightning's decay, and the intra-block scores need only the K features:
//   A    = (a b^T) (.) W,             W_ij = cos(pi (i - j) / 2M) for i >= j, else 0
//   num  = A v + u S,   den = rowsum(A) + u z,   o = num / max(den, eps)
//   S   += w^T v,       z  += w^T 1
// Backward: g = do / max(den, eps), e = -(do . o) / max(den, eps) (0 where the clamp is active), the
// gradients of num and den; P = (g v^T + e 1^T) (.) W:
//   da = P b + cs (.) (g S^T + e z^T)_cos + sn (.) (g S^T + e z^T)_sin,   dq = phi'(q) (.) da
//   db = P^T a + cs (.) (v dS^T + 1 dz^T)_cos + sn (.) (..)_sin,           dk = phi'(k) (.) db
//   dv = A^T g + w dS,   dS += u^T g,   dz += u^T e     (dS, dz: the gradient of the state after the block)
// The dq pass walks blocks forwards (it needs S and computes g, e, kept in a [B, T, H, V + 1]
// buffer), the dk, dv pass backwards. Non-causal: the whole sequence's S, z first, then
// o = u S / max(u z, eps) block by block. Work runs over (sequence, group of heads, segment) items as
// lightning's does (cpu/chunked.hpp); segments of one sequence combine their state sums in order.
#pragma once

#include <cmath>
#include <memory>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/cpu/chunked.hpp"
#include "lcsm/cpu/device.hpp"
#include "lcsm/cpu/lightning.hpp"
#include "lcsm/ops/cosformer.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cpu::detail {

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

template <class S>
class CosformerPool {
 public:
  CosformerPool(int workers, index_t C, index_t K, index_t V) : slots_(workers), C_(C), K_(K), V_(V) {}
  CosformerWorkspace<S>& operator[](int worker) {
    if (!slots_[worker]) slots_[worker] = std::make_unique<CosformerWorkspace<S>>(C_, K_, V_);
    return *slots_[worker];
  }

 private:
  std::vector<std::unique_ptr<CosformerWorkspace<S>>> slots_;
  index_t C_, K_, V_;
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

// Heads [first head, + G) of one work item: their states and the sequence's mask.
template <class S>
struct CosRun {
  index_t head0, heads;
  const Decay<S>* mask;
  CosState<S>* states;
};

// Causal forward over tokens [begin, end) of a group of heads, block by block, heads within a block.
template <class T, class S>
void cos_forward_range(CosformerWorkspace<S>& ws, const CosformerProblem<T>& pb, const CosformerSequence& cq,
                       const CosRun<S>& run, const Sequence& sq, index_t begin, index_t end, const View<T, 4>& o,
                       bool want_state) {
  index_t heads[kMaxGroup];
  for (index_t g = 0; g < run.heads; ++g) heads[g] = run.head0 + g;
  for (index_t t = begin; t < end; t += pb.C) {
    const index_t c = std::min(pb.C, end - t);
    const bool update = t + c < end || want_state;
    block_angles(cq, t, c, ws.cs, ws.sn);
    for (index_t g = 0; g < run.heads; ++g)
      cos_forward_block(ws, pb, *run.mask, run.states[g], sq, t, c, heads[g], update, o,
                        next_rows_forward(g, run.heads, heads, t, c, end, pb.C));
  }
}

// Non-causal output of tokens [begin, end): o = u S / max(u z, eps) with the whole sequence's S, z.
template <class T, class S>
void cos_bidirectional_range(CosformerWorkspace<S>& ws, const CosformerProblem<T>& pb, const CosformerSequence& cq,
                             const CosRun<S>& run, const Sequence& sq, index_t begin, index_t end,
                             const View<T, 4>& o) {
  for (index_t t = begin; t < end; t += pb.C) {
    const index_t c = std::min(pb.C, end - t);
    block_angles(cq, t, c, ws.cs, ws.sn);
    for (index_t g = 0; g < run.heads; ++g) {
      const CosState<S>& st = run.states[g];
      const index_t h = run.head0 + g;
      load_phi_rows(pb.q, sq, t, c, h, pb.relu, ws.a);
      expand_rows(ws.a, c, ws.cs, ws.sn, ws.u);
      auto U = ws.u.topRows(c);
      ws.o.topRows(c).noalias() = U * st.s;
      ws.den.head(c).noalias() = U * st.z;
      store_normalised(ws.o, ws.den, c, static_cast<S>(pb.eps), o, sq, t, h);
    }
  }
}

// What every entry point sets up: sequences, their positions and M, the segment plan, work items.
struct CosformerPlan {
  Sequences seqs;
  std::vector<CosformerSequence> where;
  std::vector<Boundaries> plan;
  std::vector<WorkItem> items;
  index_t group;
  CosformerPlan(const CosFormerAttention& op, const lcsm::detail::ProblemShape& p, const CuSeqlens& cu, int threads)
      : seqs(p.batch, p.time, cu) {
    for (index_t n = 0; n < seqs.size(); ++n) {
      const index_t first = op.position_of(n);
      where.push_back({first, op.length_for(first, seqs[n].length)});
    }
    plan = plan_segments(seqs, p.heads, op.chunk, threads);
    group = head_group(seqs, plan, p.heads, threads);
    items = work_items(plan, p.heads, group);
  }
  bool cut(index_t n) const { return plan[n].size() > 2; }
  index_t segments(index_t n) const { return static_cast<index_t>(plan[n].size()) - 1; }
};

// Per (sequence, head): the state sums of each segment from zero (segments listed by `wanted`),
// computed in parallel. Indexed [n * H + h][segment].
template <class T, class S, class Wanted>
std::vector<std::vector<CosState<S>>> segment_sums(CosformerPool<S>& pool, const CosformerProblem<T>& pb,
                                                   const CosformerPlan& cp, index_t H, int threads, Wanted&& wanted) {
  std::vector<std::vector<CosState<S>>> sums(cp.seqs.size() * H);
  std::vector<WorkItem> todo;
  for (index_t n = 0; n < cp.seqs.size(); ++n)
    for (index_t h = 0; h < H; ++h)
      for (index_t s = 0; s < cp.segments(n); ++s)
        if (wanted(n, s)) {
          if (sums[n * H + h].empty()) sums[n * H + h].assign(cp.segments(n), CosState<S>(0, 0));
          todo.push_back({n, h, s});
        }
  parallel_for(threads, static_cast<index_t>(todo.size()), [&](index_t i, int worker) {
    const WorkItem it = todo[i];
    CosState<S> out(2 * pb.K, pb.V);
    cos_delta(pool[worker], pb, cp.where[it.seq], cp.seqs[it.seq], it.head, cp.plan[it.seq][it.segment],
              cp.plan[it.seq][it.segment + 1], out);
    sums[it.seq * H + it.head][it.segment] = std::move(out);
  });
  return sums;
}

// The state before each segment of the cut sequences: initial + the sums of the segments before it.
// Non-causal (whole = true): every segment gets the whole sequence's sums plus the initial state.
template <class T, class S>
std::vector<std::vector<CosState<S>>> cos_start_states(CosformerPool<S>& pool, const CosformerProblem<T>& pb,
                                                       const CosformerPlan& cp, index_t H,
                                                       const View<const S, 4>& initial, int threads, bool whole) {
  auto sums = segment_sums<T, S>(pool, pb, cp, H, threads,
                                 [&](index_t n, index_t s) { return whole || (cp.cut(n) && s + 1 < cp.segments(n)); });
  for (index_t n = 0; n < cp.seqs.size(); ++n)
    for (index_t h = 0; h < H; ++h) {
      auto& st = sums[n * H + h];
      if (st.empty()) continue;
      CosState<S> running(2 * pb.K, pb.V);
      running.set_zero();
      if (initial.present()) running.load(initial, n, h);
      if (whole) {
        for (auto& s : st) running.add(s);
        for (auto& s : st) s = running;
        continue;
      }
      for (index_t s = 0; s < cp.segments(n); ++s) {
        CosState<S> next = running;
        if (s + 1 < cp.segments(n)) next.add(st[s]);
        st[s] = running;
        running = std::move(next);
      }
    }
  return sums;
}

// ---------------------------------------------------------------------------------------------
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

}  // namespace cpu::detail

// Forward: o = cosFormer(q, k, v) with optional [N, H, 2K, V + 1] initial/final states and cu_seqlens.
template <class T>
void forward(const cpu::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<state_t<T>>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::forward(cpu, CosFormerAttention)";
  const auto p = lcsm::detail::check_forward(where, q, k, v, o, StateIO<S>{}, cu_seqlens);
  op.check(where);
  lcsm::detail::check_cosformer_state(where, "initial_state", state.initial, p);
  lcsm::detail::check_cosformer_state(where, "final_state", state.final, p);
  lcsm::detail::check_state_alias(where, "final_state", state.final, "initial_state", state.initial);
  lcsm::detail::check_disjoint(where, "final_state", state.final, "o", o);
  const int threads = device.thread_count();
  const CosformerPlan cp(op, p, cu_seqlens, threads);
  op.check_positions(
      where, cp.seqs.size(), [&](index_t n) { return cp.seqs[n].length; }, false);
  const CosformerProblem<T> pb{
      q, k, v, p.key_dim, p.value_dim, op.chunk, op.feature_map == CosFormerAttention::FeatureMap::relu, op.eps};
  CosformerPool<S> pool(threads, op.chunk, p.key_dim, p.value_dim);
  const auto starts = cos_start_states(pool, pb, cp, p.heads, state.initial, threads, !op.causal);

  cpu::parallel_for(threads, static_cast<index_t>(cp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = cp.items[i];
    CosformerWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads);
    const bool last = it.segment + 1 == cp.segments(it.seq);
    const bool want_state = last && state.final.present();
    const Decay<S> mask = cos_mask<S>(cp.where[it.seq].M, op.chunk);
    for (index_t g = 0; g < it.heads; ++g) {
      CosState<S>& st = ws.states[g];
      const auto& pre = starts[it.seq * p.heads + it.head + g];
      if (!pre.empty()) st = pre[it.segment];
      else if (state.initial.present()) st.load(state.initial, it.seq, it.head + g);
      else st.set_zero();
    }
    const CosRun<S> run{it.head, it.heads, &mask, ws.states.data()};
    const index_t begin = cp.plan[it.seq][it.segment], end = cp.plan[it.seq][it.segment + 1];
    if (op.causal) cos_forward_range(ws, pb, cp.where[it.seq], run, cp.seqs[it.seq], begin, end, o, want_state);
    else cos_bidirectional_range(ws, pb, cp.where[it.seq], run, cp.seqs[it.seq], begin, end, o);
    if (want_state)
      for (index_t g = 0; g < it.heads; ++g) ws.states[g].store(state.final, it.seq, it.head + g);
  });
}

// Backward: dq, dk, dv from do; optionally the gradient of the [N, H, 2K, V + 1] initial state
// (from that of the final state). cosFormer has no parameters of its own.
template <class T>
void backward(const cpu::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, View<T, 4> dq, detail::identity_t<View<T, 4>> dk,
              detail::identity_t<View<T, 4>> dv, const StateGrads<state_t<T>>& states = {},
              const CuSeqlens& cu_seqlens = {}) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::backward(cpu, CosFormerAttention)";
  const auto p = lcsm::detail::check_backward(where, q, k, v, d_o, dq, dk, dv, StateGrads<S>{}, cu_seqlens);
  op.check(where);
  lcsm::detail::check_cosformer_state(where, "initial_state", states.initial, p);
  lcsm::detail::check_cosformer_state(where, "d_final_state", states.d_final, p);
  lcsm::detail::check_cosformer_state(where, "d_initial_state", states.d_initial, p);
  const int threads = device.thread_count();
  const CosformerPlan cp(op, p, cu_seqlens, threads);
  op.check_positions(
      where, cp.seqs.size(), [&](index_t n) { return cp.seqs[n].length; }, false);
  const CosformerProblem<T> pb{
      q, k, v, p.key_dim, p.value_dim, op.chunk, op.feature_map == CosFormerAttention::FeatureMap::relu, op.eps};
  const index_t H = p.heads, K2 = 2 * p.key_dim, V = p.value_dim;
  CosformerPool<S> pool(threads, op.chunk, p.key_dim, V);
  const auto starts = cos_start_states(pool, pb, cp, H, states.initial, threads, !op.causal);
  // g and e for the backward walk (causal only).
  std::vector<S> ge_store(op.causal ? static_cast<std::size_t>(p.batch * p.time * H * (V + 1)) : 0);
  const View<S, 4> ge = lcsm::view(ge_store.data(), {p.batch, p.time, H, V + 1});
  // u^T [g, e] per segment: needed for every segment but the first of cut sequences (causal), for
  // all (non-causal: the whole sequence's state gradient).
  auto wants_gamma = [&](index_t n, index_t s) { return !op.causal || (cp.cut(n) && s > 0); };
  std::vector<std::vector<CosState<S>>> gammas(cp.seqs.size() * H);
  for (index_t n = 0; n < cp.seqs.size(); ++n)
    for (index_t h = 0; h < H; ++h) gammas[n * H + h].assign(cp.segments(n), CosState<S>(K2, V));

  auto init_states = [&](CosformerWorkspace<S>& ws, const WorkItem& it) {
    for (index_t g = 0; g < it.heads; ++g) {
      CosState<S>& st = ws.states[g];
      const auto& pre = starts[it.seq * H + it.head + g];
      if (!pre.empty()) st = pre[it.segment];
      else if (states.initial.present()) st.load(states.initial, it.seq, it.head + g);
      else st.set_zero();
    }
  };
  // Forward walk: dq, g and e, and the segments' u^T [g, e].
  cpu::parallel_for(threads, static_cast<index_t>(cp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = cp.items[i];
    CosformerWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads);
    init_states(ws, it);
    const Decay<S> mask = cos_mask<S>(cp.where[it.seq].M, op.chunk);
    const Sequence sq = cp.seqs[it.seq];
    const index_t begin = cp.plan[it.seq][it.segment], end = cp.plan[it.seq][it.segment + 1];
    const bool gamma = wants_gamma(it.seq, it.segment);
    for (index_t g = 0; g < it.heads && gamma; ++g) gammas[it.seq * H + it.head + g][it.segment].set_zero();
    for (index_t t = begin; t < end; t += op.chunk) {
      const index_t c = std::min(op.chunk, end - t);
      block_angles(cp.where[it.seq], t, c, ws.cs, ws.sn);
      for (index_t g = 0; g < it.heads; ++g)
        cos_backward_queries_block(ws, pb, op.causal, mask, ws.states[g],
                                   gamma ? &gammas[it.seq * H + it.head + g][it.segment] : nullptr, sq, t, c,
                                   it.head + g, t + c < end, d_o, dq, ge);
    }
  });
  // The state gradient after each segment: d_final, plus the u^T [g, e] of every later segment
  // (non-causal: of every segment).
  std::vector<std::vector<CosState<S>>> d_after(cp.seqs.size() * H);
  for (index_t n = 0; n < cp.seqs.size(); ++n)
    for (index_t h = 0; h < H; ++h) {
      CosState<S> running(K2, V);
      running.set_zero();
      if (states.d_final.present()) running.load(states.d_final, n, h);
      const auto& gm = gammas[n * H + h];
      if (!op.causal)
        for (const auto& x : gm) running.add(x);
      auto& da = d_after[n * H + h];
      da.assign(cp.segments(n), CosState<S>(0, 0));
      for (index_t s = cp.segments(n) - 1; s >= 0; --s) {
        da[s] = running;
        if (op.causal && s > 0) running.add(gm[s]);
      }
    }
  // Backward walk: dk, dv, and the initial state's gradient.
  cpu::parallel_for(threads, static_cast<index_t>(cp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = cp.items[i];
    CosformerWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads);
    for (index_t g = 0; g < it.heads; ++g) ws.states[g] = d_after[it.seq * H + it.head + g][it.segment];
    const Decay<S> mask = cos_mask<S>(cp.where[it.seq].M, op.chunk);
    const Sequence sq = cp.seqs[it.seq];
    const index_t begin = cp.plan[it.seq][it.segment], end = cp.plan[it.seq][it.segment + 1];
    const bool want_dinitial = it.segment == 0 && states.d_initial.present();
    const index_t blocks = (end - begin + op.chunk - 1) / op.chunk;
    for (index_t m = blocks - 1; m >= 0; --m) {
      const index_t t = begin + m * op.chunk, c = std::min(op.chunk, end - t);
      block_angles(cp.where[it.seq], t, c, ws.cs, ws.sn);
      for (index_t g = 0; g < it.heads; ++g)
        cos_backward_keys_block(ws, pb, op.causal, mask, ws.states[g], sq, t, c, it.head + g, m > 0 || want_dinitial,
                                ge, dk, dv);
    }
    if (want_dinitial)
      for (index_t g = 0; g < it.heads; ++g) ws.states[g].store(states.d_initial, it.seq, it.head + g);
  });
}

// Decode: advances state [B, H, 2K, V + 1] in place by the n tokens of q, k [B, n, H, K],
// v [B, n, H, V], writing o [B, n, H, V]. Causal only; op.length (M) and op.positions ([B], the
// position of each sequence's first decode token) are required, and positions + n <= M.
template <class T>
void step(const cpu::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<state_t<T>, 4> state) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::step(cpu, CosFormerAttention)";
  const auto p = lcsm::detail::check_qkv(where, q, k, v, CuSeqlens{});
  lcsm::detail::check_output(where, "o", o);
  lcsm::detail::check_shape(where, "o", o, v.shape(), "[B, n, H, V], the shape of v");
  lcsm::detail::check_disjoint(where, "o", o, "q", q);
  lcsm::detail::check_disjoint(where, "o", o, "k", k);
  lcsm::detail::check_disjoint(where, "o", o, "v", v);
  lcsm::detail::check_argument(state.present(), where, "state", "a [B, H, 2K, V+1] state to advance", "an absent view");
  lcsm::detail::check_cosformer_state(where, "state", state, p);
  lcsm::detail::check_disjoint(where, "state", state, "o", o);
  op.check(where);
  lcsm::detail::check_argument(op.causal, where, "op.causal", "causal = true (decode is causal)", "false");
  lcsm::detail::check_argument(op.length.has_value(), where, "op.length",
                               "a fixed M for decode (the weights depend on it)", "unset");
  op.check_positions(
      where, p.batch, [&](index_t) { return p.time; }, true);
  const index_t K = p.key_dim, K2 = 2 * K, V = p.value_dim;
  const S eps = static_cast<S>(op.eps);
  const bool relu = op.feature_map == CosFormerAttention::FeatureMap::relu;
  const double f = 3.14159265358979323846 / (2.0 * static_cast<double>(*op.length));
  const int threads = static_cast<int>(
      std::min<index_t>(device.thread_count(), std::max<index_t>(1, p.batch * p.heads * K2 * V >> 20)));
  cpu::parallel_for(threads, p.batch * p.heads, [&](index_t item, int) {
    const index_t b = item / p.heads, h = item % p.heads;
    Matrix<S> local;
    const bool direct = state.stride(3) == 1;
    if (!direct) {
      local.resize(K2, V + 1);
      for (index_t r = 0; r < K2; ++r)
        for (index_t c = 0; c <= V; ++c) local(r, c) = state(b, h, r, c);
    }
    S* s = direct ? &state(b, h, 0, 0) : local.data();
    const index_t ld = direct ? state.stride(2) : V + 1;
    std::vector<S> buf(2 * K2 + 2 * V);
    S *u = buf.data(), *w = u + K2, *vv = w + K2, *out = vv + V;
    for (index_t t = 0; t < p.time; ++t) {
      const double ang = f * static_cast<double>(op.positions(b) + t);
      const S cs = static_cast<S>(std::cos(ang)), sn = static_cast<S>(std::sin(ang));
      for (index_t d = 0; d < K; ++d) {
        const S a = cos_phi(relu, static_cast<S>(q(b, t, h, d))), bk = cos_phi(relu, static_cast<S>(k(b, t, h, d)));
        u[d] = a * cs;
        u[K + d] = a * sn;
        w[d] = bk * cs;
        w[K + d] = bk * sn;
      }
      for (index_t c = 0; c < V; ++c) vv[c] = static_cast<S>(v(b, t, h, c));
      decode_token(s, ld, K2, V, u, w, vv, S(1), out);
      S den = 0;
      for (index_t r = 0; r < K2; ++r) {
        S& z = s[r * ld + V];
        z += w[r];
        den += u[r] * z;
      }
      const S inv = S(1) / (den < eps ? eps : den);
      for (index_t c = 0; c < V; ++c) o(b, t, h, c) = static_cast<T>(out[c] * inv);
    }
    if (!direct)
      for (index_t r = 0; r < K2; ++r)
        for (index_t c = 0; c <= V; ++c) state(b, h, r, c) = local(r, c);
  });
}

}  // namespace lcsm
