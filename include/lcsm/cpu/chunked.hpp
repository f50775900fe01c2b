// The one engine of the chunked CPU operators (lightning attention, the gated recurrences, cosFormer).
// A family file holds only its block kernels and its entry points and includes this file, never
// another family's. Here: the causal block products with a Toeplitz or per-entry mask; included:
// moving rows in and out (chunk_io.hpp), the segment plan and the block walks (segments.hpp), the
// segment-state scans (segment_scan.hpp), per-worker scratch (device.hpp) and decode (decode.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "lcsm/cpu/chunk_io.hpp"
#include "lcsm/cpu/decode.hpp"
#include "lcsm/cpu/device.hpp"
#include "lcsm/cpu/segment_scan.hpp"
#include "lcsm/cpu/segments.hpp"

namespace lcsm::cpu::detail {

// lambda^p = exp(g p) for p = 0..C; g <= 0, so no power ever overflows.
template <class S>
Vector<S> decay_powers(double g, index_t C) {
  Vector<S> pw(C + 1);
  for (index_t p = 0; p <= C; ++p) pw(p) = static_cast<S>(std::exp(g * static_cast<double>(p)));
  return pw;
}

// True when every entry of m is finite: x * 0 is 0 for finite x and NaN otherwise, and Eigen
// vectorizes the sum (allFinite() is a scalar loop here).
template <class M>
bool all_finite(const M& m) {
  using S = typename M::Scalar;
  return (m.array() * S(0)).sum() == S(0);
}

// A decay factor x = exp(G) in [0, 1] that a float state is multiplied by once per block. As a
// rounded float x near 1, m * x rounds the same way in every block and the error grows linearly with
// T (measured: 7.1e-6 relative at 64K tokens for lambda = exp(-1e-6) per token and 64-token blocks,
// 14x the error of the first 4K tokens). Applied as m + (x - 1) m, with x - 1 = expm1(G) from double,
// only the addition rounds, like the state's other additions, and the error grows like the square
// root of the number of blocks (6.9e-7 at 64K: as with no decay). That form is used for x >= 1/2
// only: for a strong decay x - 1 rounds to -1 in float (x = e^-20: m + (x - 1) m = 0, not x m), and
// a state decayed by less than 1/2 per block forgets faster than any bias of x can compound, so m * x
// is exact enough there. Double states: m * x.
template <class S>
struct DecayFactor {
  S x = S(1), xm1 = S(0);  // x and x - 1
  DecayFactor() = default;
  explicit DecayFactor(double log_x) : x(static_cast<S>(std::exp(log_x))), xm1(static_cast<S>(std::expm1(log_x))) {}
};

// m = x m (m a matrix or a row).
template <class M, class S>
void apply_decay(M&& m, const DecayFactor<S>& f) {
  if (std::is_same_v<S, double> || f.x < S(0.5)) m *= f.x;
  else m += m * f.xm1;
}

// The decay factors of one head for blocks of up to C tokens, made once per work item:
//   pw(p) = lambda^p for p = 0..C, and rev(m) = lambda^(C-1-m) for m = 0..C-1, so that the factors
//   lambda^(i-j) of row i of the causal mask, j = 0..i, are the contiguous run rev(C-1-i+j): the mask
//   loop then reads both operands in order and vectorizes.
template <class S>
struct Decay {
  Vector<S> pw, rev;
  bool decayed = false;
  double g = 0;
  Decay(double log_decay, index_t C)
      : pw(decay_powers<S>(log_decay, C)), rev(C), decayed(log_decay != 0.0), g(log_decay) {
    for (index_t m = 0; m < C; ++m) rev(m) = pw(C - 1 - m);
  }
  index_t chunk() const { return rev.size(); }
  // lambda^c for a state that is decayed block after block (DecayFactor).
  DecayFactor<S> block(index_t c) const { return DecayFactor<S>(g * static_cast<double>(c)); }
};

// Rows of a causal C x C block are computed in row blocks of `p` rows; row block r only needs
// columns [0, end of r): the blocks above the diagonal are never formed. p is a quarter of the
// chunk but at least 16 rows, a size Eigen's kernels still run at full speed.
inline index_t causal_panel(index_t c) { return std::max<index_t>(16, (c + 3) / 4); }

// No prefetches between products.
struct NoPrefetch {
  void operator()() const {}
};

// Masks of a causal score block, applied to entries j = 0..i of row i (a select where the mask is
// zero, never a multiply by an out-of-range factor):
//   ToeplitzMask: a(i, j) *= f(i - j) from a Decay (lightning's lambda^(i-j), cosFormer's weights);
//   EntryMask: a(i, j) *= m(i, j) (the scalar gate's e^{G_i - G_j}); NoMask: none.
template <class S>
struct ToeplitzMask {
  const Decay<S>& d;
  void operator()(index_t i, S* row) const {
    if (!d.decayed) return;
    const S* f = d.rev.data() + (d.chunk() - 1 - i);
    for (index_t j = 0; j <= i; ++j) row[j] *= f[j];
  }
};
template <class M>
struct EntryMask {
  const M& m;
  template <class S>
  void operator()(index_t i, S* row) const {
    const S* f = &m(i, 0);
    for (index_t j = 0; j <= i; ++j) row[j] *= f[j];
  }
};
struct NoMask {
  template <class S>
  void operator()(index_t, S*) const {}
};

// a.block(r0, 0, n, r1) = x.middleRows(r0, n) * y.topRows(r1)^T for each panel [r0, r1) of p rows
// of the first c rows: the lower block triangle of x y^T. Then the mask on those entries and
// a(i, j) = 0 for i < j < r1. Entries right of r1 are left unset; the products below never read
// them. between() runs after each product (the caller's prefetches).
template <class MA, class MX, class MY, class Mask, class F = NoPrefetch>
void panel_scores(MA& a, const MX& x, const MY& y, index_t c, index_t p, const Mask& mask, F&& between = {}) {
  using S = typename MA::Scalar;
  for (index_t r0 = 0; r0 < c; r0 += p) {
    const index_t r1 = std::min(c, r0 + p);
    a.block(r0, 0, r1 - r0, r1).noalias() = x.middleRows(r0, r1 - r0) * y.topRows(r1).transpose();
    between();
    for (index_t i = r0; i < r1; ++i) {
      S* row = &a(i, 0);
      mask(i, row);
      for (index_t j = i + 1; j < r1; ++j) row[j] = S(0);
    }
  }
}

// out.topRows(c) = tril(a) * b (lower) or triu(a^T) * b, i.e. a^T * b with a lower (transposed),
// from the panels of p rows panel_scores formed. The zero entries inside the diagonal panels take
// part in the dense products, which is exact for finite b; when b holds NaN or Inf (b_finite
// false), 0 * NaN would leak it into rows that do not depend on it, so the product then skips the
// zeros exactly.
template <class MA, class MB, class MO, class F = NoPrefetch>
void panel_times(const MA& a, bool transposed, const MB& b, MO& out, index_t c, index_t p, bool b_finite,
                 F&& between = {}) {
  if (!b_finite) {
    out.topRows(c).setZero();
    for (index_t i = 0; i < c; ++i)
      for (index_t j = 0; j <= i; ++j) {
        if (transposed) out.row(j) += a(i, j) * b.row(i);
        else out.row(i) += a(i, j) * b.row(j);
      }
    return;
  }
  for (index_t r0 = 0; r0 < c; r0 += p) {
    const index_t r1 = std::min(c, r0 + p);
    if (transposed)  // out[r0:r1] = a[r0:c, r0:r1]^T b[r0:c]
      out.middleRows(r0, r1 - r0).noalias() = a.block(r0, r0, c - r0, r1 - r0).transpose() * b.middleRows(r0, c - r0);
    else  // out[r0:r1] = a[r0:r1, 0:r1] b[0:r1]
      out.middleRows(r0, r1 - r0).noalias() = a.block(r0, 0, r1 - r0, r1) * b.topRows(r1);
    between();
  }
}

// The same with a Toeplitz decay mask and panels of causal_panel(c) rows.
template <class MA, class MX, class MY, class S, class F = NoPrefetch>
void causal_scores(MA& a, const MX& x, const MY& y, index_t c, const Decay<S>& d, F&& between = {}) {
  panel_scores(a, x, y, c, causal_panel(c), ToeplitzMask<S>{d}, between);
}
template <class MA, class MB, class MO, class F = NoPrefetch>
void causal_times(const MA& a, bool transposed, const MB& b, MO& out, index_t c, bool b_finite, F&& between = {}) {
  panel_times(a, transposed, b, out, c, causal_panel(c), b_finite, between);
}

}  // namespace lcsm::cpu::detail
