// What the two gated CPU operators share: the problem they run, their workspace, the cumulative
// log-gates of a block (in double) and exponentials of non-positive differences.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "lcsm/cpu/chunked.hpp"

namespace lcsm::cpu::detail {

// gate is [B, T, H, W]: W = 1 for the scalar gate (seen with a unit last dimension), W = K for the
// vector gate. sub: the panel height of the causal products (the vector gate's sub-chunk).
template <class T, class S>
struct GatedProblem {
  View<const T, 4> q, k, v;
  View<const S, 4> gate;
  index_t K, V, C, sub;
  double scale;
  index_t gate_width() const { return gate.size(3); }
};

template <class S>
struct GatedWorkspace {
  Matrix<S> q, k, v, o, d_o, qd, kd, vd, dod, a, p, dq, dk, dv, x, y, mask, decay;
  Matrix<S> lf, rf, pre, post;             // vector gate: per-token and per-sub-chunk factors (gated_vector.hpp)
  Matrix<double> G;                        // C x W cumulative log-gates of the block (inclusive)
  Vector<S> f, ff;                         // per-row factors (scalar gate) or one K-row of factors (vector gate)
  Eigen::Array<S, Eigen::Dynamic, 1> row;  // scratch row of exponents
  Eigen::Array<double, Eigen::Dynamic, 1> drow;
  Eigen::Matrix<S, 1, Eigen::Dynamic> w, ones;  // one K-row (vector gate's within-panel products)
  std::vector<double> zeros;                    // G before the block: 0 for every key
  std::vector<Matrix<S>> states;
  Prefetcher pf;  // the rows of the block that comes next (chunk_io.hpp)
  GatedWorkspace(index_t C, index_t K, index_t V, index_t W)
      : q(C, K), k(C, K), v(C, V), o(C, V), d_o(C, V), qd(C, K), kd(C, K), vd(C, V), dod(C, V), a(C, C), p(C, C),
        dq(C, K), dk(C, K), dv(C, V), x(C, K), y(C, K), mask(C, C), decay(C, K), lf(C, K), rf(C, K), pre(C + 1, K),
        post(C, K), G(C, W), f(C), ff(C), row(std::max(C, K)), drow(std::max(C, K)), w(K),
        ones(Eigen::Matrix<S, 1, Eigen::Dynamic>::Ones(K)), zeros(K, 0.0) {}
  void ensure_states(index_t n, index_t K, index_t V) {
    while (static_cast<index_t>(states.size()) < n) states.emplace_back(K, V);
  }
};

// Sets up the prefetches of one forward block: its own output rows (written at its end) and the
// q, k, v and gate rows of the block that runs next (the gate only when it has K columns: a scalar
// gate's 64 values of a head share a few lines).
template <class T, class S>
void prefetch_forward(Prefetcher& pf, const GatedProblem<T, S>& pb, const Sequence& sq, index_t t, index_t c, index_t h,
                      const View<T, 4>& o, const NextRows& next) {
  pf.clear();
  const index_t b = sq.batch;
  if (o.present()) {
    pf.add(o, b, sq.start + t, c, h, true);
    pf.add(pb.q, b, sq.start + next.t, next.c, next.h, false);
  }
  pf.add(pb.k, b, sq.start + next.t, next.c, next.h, false);
  pf.add(pb.v, b, sq.start + next.t, next.c, next.h, false);
  if (pb.gate_width() > 1) pf.add(pb.gate, b, sq.start + next.t, next.c, next.h, false);
}

// G(i, :) = sum_{r <= i} g(t + r, :) for the c tokens of a block, in double: the differences
// G_i - G_j of a long block stay exact to double rounding even after a strong gate.
template <class T, class S>
void load_cumulative_gate(const GatedProblem<T, S>& pb, const Sequence& sq, index_t t, index_t c, index_t h,
                          Matrix<double>& G) {
  const index_t W = pb.gate_width();
  for (index_t i = 0; i < c; ++i) {
    const S* g = &pb.gate(sq.batch, sq.start + t + i, h, 0);
    const index_t sg = pb.gate.stride(3);
    double* out = G.row(i).data();
    const double* prev = i ? G.row(i - 1).data() : nullptr;
    for (index_t d = 0; d < W; ++d) out[d] = (prev ? prev[d] : 0.0) + static_cast<double>(g[d * sg]);
  }
}

// The sum of the log-gates of tokens [begin, end) of head h, per gate column (W values).
template <class T, class S>
std::vector<double> total_gate(const GatedProblem<T, S>& pb, const Sequence& sq, index_t h, index_t begin,
                               index_t end) {
  const index_t W = pb.gate_width();
  std::vector<double> tot(W, 0.0);
  for (index_t t = begin; t < end; ++t)
    for (index_t d = 0; d < W; ++d) tot[d] += static_cast<double>(pb.gate(sq.batch, sq.start + t, h, d));
  return tot;
}

// out[0:n] = exp(hi[0:n] - lo[0:n]) (arguments <= 0 by construction), via a double difference and a
// vectorized float (or double) exponential.
template <class S>
void exp_of_difference(const double* hi, const double* lo, index_t n, S* out,
                       Eigen::Array<double, Eigen::Dynamic, 1>& drow) {
  using DMap = Eigen::Map<const Eigen::Array<double, Eigen::Dynamic, 1>>;
  drow.head(n) = DMap(hi, n) - DMap(lo, n);
  Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>> o(out, n);
  o = drow.head(n).template cast<S>();
  o = o.exp();
}
// out[0:n] = exp(x - lo[0:n]) with a scalar x.
template <class S>
void exp_of_difference(double x, const double* lo, index_t n, S* out, Eigen::Array<double, Eigen::Dynamic, 1>& drow) {
  using DMap = Eigen::Map<const Eigen::Array<double, Eigen::Dynamic, 1>>;
  drow.head(n) = x - DMap(lo, n);
  Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>> o(out, n);
  o = drow.head(n).template cast<S>();
  o = o.exp();
}

// S = diag(exp(total)) S, total the log-gate sum per row (one value for every row when W = 1).
template <class S>
void decay_rows(Matrix<S>& state, const std::vector<double>& total) {
  if (total.size() == 1) {
    state *= static_cast<S>(std::exp(total[0]));
    return;
  }
  for (index_t r = 0; r < state.rows(); ++r) state.row(r) *= static_cast<S>(std::exp(total[r]));
}

}  // namespace lcsm::cpu::detail
