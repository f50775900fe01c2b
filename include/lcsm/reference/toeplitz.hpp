// The float64 reference of the Toeplitz long convolution, two ways:
//
// - the direct O(n^2) sums: y[t] = sum_s a[t - s] x[s]; dx[s] = sum_t a[t - s] dy[t];
//   da[r] = sum_b sum_t dy[t] x[t - r];
// - the mapping onto the generic EOS reference (channels as heads, K = n, V = 1): e_t = one-hot(t),
//   i_t = x_t, s_t[j] = a[t - j] for j <= t. The bidirectional form is that causal EOS plus the
//   same EOS on each sequence reversed in time with a'[r] = a[-r], minus the r = 0 term that both
//   count: y = y_causal + reverse(y_anti) - a_0 x.
//
// Plain loops in double, nothing shared with the backends. The views are [B, n, C] (x, y, dx, dy)
// and [C, n] or [C, 2n - 1] (coefficients, da) with ToeplitzConvolution's layout.
#pragma once

#include <algorithm>
#include <vector>

#include "lcsm/ops/toeplitz.hpp"
#include "lcsm/reference/eos.hpp"

namespace lcsm::reference {

namespace detail {

// Coefficient a_r of channel c, or 0 outside the operator's range.
inline double coefficient(const ToeplitzConvolution<double>& op, index_t c, index_t r) {
  if (op.causal && r < 0) return 0.0;
  const index_t i = op.center() + r;
  return i >= 0 && i < op.coefficients.size(1) ? op.coefficients(c, i) : 0.0;
}

}  // namespace detail

// One output y[b, t, c] of the sequence [start, start + length) of row b, by the direct sum.
inline double toeplitz_output(const ToeplitzConvolution<double>& op, View<const double, 3> x, index_t b, index_t start,
                              index_t length, index_t t, index_t c) {
  double acc = 0;
  const index_t last = op.causal ? t : length - 1;
  for (index_t s = 0; s <= last; ++s) acc += detail::coefficient(op, c, t - s) * x(b, start + s, c);
  return acc;
}

// y = the convolution of x, by the direct O(n^2) sum per channel.
inline void toeplitz_forward(const ToeplitzConvolution<double>& op, View<const double, 3> x, View<double, 3> y,
                             CuSeqlens cu = {}) {
  const Sequences seqs(x.size(0), x.size(1), cu);
  for (index_t n = 0; n < seqs.size(); ++n) {
    const Sequence sq = seqs[n];
    for (index_t t = 0; t < sq.length; ++t)
      for (index_t c = 0; c < x.size(2); ++c)
        y(sq.batch, sq.start + t, c) = toeplitz_output(op, x, sq.batch, sq.start, sq.length, t, c);
  }
}

// dx[s] = sum_t a[t - s] dy[t] and da[r] = sum_b sum_t dy[t] x[t - r] by the direct sums; each
// absent output is skipped. da has the shape of op.coefficients; entries no sequence reaches are 0.
inline void toeplitz_backward(const ToeplitzConvolution<double>& op, View<const double, 3> x, View<const double, 3> dy,
                              View<double, 3> dx, View<double, 2> da, CuSeqlens cu = {}) {
  const Sequences seqs(x.size(0), x.size(1), cu);
  const index_t C = x.size(2);
  if (da.present())
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < da.size(1); ++i) da(c, i) = 0.0;
  for (index_t n = 0; n < seqs.size(); ++n) {
    const Sequence sq = seqs[n];
    const index_t b = sq.batch, t0 = sq.start, L = sq.length;
    for (index_t c = 0; c < C; ++c) {
      if (dx.present())
        for (index_t s = 0; s < L; ++s) {
          double acc = 0;
          for (index_t t = op.causal ? s : 0; t < L; ++t) acc += detail::coefficient(op, c, t - s) * dy(b, t0 + t, c);
          dx(b, t0 + s, c) = acc;
        }
      if (da.present())
        for (index_t r = op.causal ? 0 : -(L - 1); r < L; ++r) {
          double acc = 0;
          for (index_t t = std::max<index_t>(0, r); t < std::min(L, L + r); ++t)
            acc += dy(b, t0 + t, c) * x(b, t0 + t - r, c);
          da(c, op.center() + r) += acc;
        }
    }
  }
}

// The causal convolution with coefficients a_r (r >= 0, from `op`, mirrored when `mirrored`: a_{-r})
// as one EOS instance over the packed rows of x. Owns the shrink and expand it builds.
class ToeplitzEos {
 public:
  ToeplitzEos(const ToeplitzConvolution<double>& op, View<const double, 3> x, CuSeqlens cu, bool mirrored)
      : B_(x.size(0)), T_(x.size(1)), C_(x.size(2)) {
    const index_t K = std::max<index_t>(T_, 1);
    shrink_.assign(B_ * T_ * C_ * K, 0.0);
    expand_.assign(B_ * T_ * C_ * K, 0.0);
    auto s = lcsm::view(shrink_.data(), {B_, T_, C_, K}), e = lcsm::view(expand_.data(), {B_, T_, C_, K});
    const Sequences seqs(B_, T_, cu);
    for (index_t n = 0; n < seqs.size(); ++n) {
      const Sequence sq = seqs[n];
      for (index_t t = sq.start; t < sq.start + sq.length; ++t)
        for (index_t c = 0; c < C_; ++c) {
          e(sq.batch, t, c, t) = 1.0;  // one-hot(t): token t writes memory row t
          for (index_t j = sq.start; j <= t; ++j)
            s(sq.batch, t, c, j) = detail::coefficient(op, c, mirrored ? j - t : t - j);
        }
    }
    eos_.shrink = s;
    eos_.expand = e;
    eos_.input = View<const double, 4>(x.data(), {B_, T_, C_, 1}, {x.stride(0), x.stride(1), x.stride(2), 1});
    eos_.cu_seqlens = cu;
  }
  ToeplitzEos(const ToeplitzEos&) = delete;
  ToeplitzEos& operator=(const ToeplitzEos&) = delete;
  const Eos& eos() const { return eos_; }
  index_t key_dim() const { return std::max<index_t>(T_, 1); }

 private:
  index_t B_, T_, C_;
  std::vector<double> shrink_, expand_;
  Eos eos_;
};

namespace detail {

// Each sequence of the packed rows of x reversed in time, as a row-major [B, n, C] buffer.
inline std::vector<double> reversed(View<const double, 3> x, CuSeqlens cu) {
  const index_t B = x.size(0), T = x.size(1), C = x.size(2);
  std::vector<double> out(B * T * C);
  const Sequences seqs(B, T, cu);
  for (index_t n = 0; n < seqs.size(); ++n) {
    const Sequence sq = seqs[n];
    for (index_t i = 0; i < sq.length; ++i)
      for (index_t c = 0; c < C; ++c)
        out[(sq.batch * T + sq.start + i) * C + c] = x(sq.batch, sq.start + sq.length - 1 - i, c);
  }
  return out;
}

inline View<double, 4> as_eos_column(std::vector<double>& v, index_t B, index_t T, index_t C) {
  return lcsm::view(v.data(), {B, T, C, 1});
}

}  // namespace detail

// y through the EOS reference (recurrent order).
inline void toeplitz_eos_forward(const ToeplitzConvolution<double>& op, View<const double, 3> x, View<double, 3> y,
                                 CuSeqlens cu = {}) {
  const index_t B = x.size(0), T = x.size(1), C = x.size(2);
  std::vector<double> y1(B * T * C);
  recurrent(ToeplitzEos(op, x, cu, false).eos(), detail::as_eos_column(y1, B, T, C));
  std::vector<double> y2;
  std::vector<double> xr;
  if (!op.causal) {
    xr = detail::reversed(x, cu);
    y2.assign(B * T * C, 0.0);
    recurrent(ToeplitzEos(op, lcsm::view(static_cast<const double*>(xr.data()), {B, T, C}), cu, true).eos(),
              detail::as_eos_column(y2, B, T, C));
    y2 = detail::reversed(lcsm::view(static_cast<const double*>(y2.data()), {B, T, C}), cu);
  }
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t c = 0; c < C; ++c) {
        const index_t i = (b * T + t) * C + c;
        y(b, t, c) = op.causal ? y1[i] : y1[i] + y2[i] - detail::coefficient(op, c, 0) * x(b, t, c);
      }
}

// dx and da through the EOS reference backward (d_input and d_shrink of each instance):
// da[r] = sum over t - j = r of d_shrink[t][j].
inline void toeplitz_eos_backward(const ToeplitzConvolution<double>& op, View<const double, 3> x,
                                  View<const double, 3> dy, View<double, 3> dx, View<double, 2> da, CuSeqlens cu = {}) {
  const index_t B = x.size(0), T = x.size(1), C = x.size(2);
  for (index_t c = 0; c < C; ++c)
    for (index_t i = 0; i < da.size(1); ++i) da(c, i) = 0.0;
  auto run = [&](View<const double, 3> xs, View<const double, 3> dys, bool mirrored, std::vector<double>& dxs) {
    const ToeplitzEos mapped(op, xs, cu, mirrored);
    const index_t K = mapped.key_dim();
    std::vector<double> ds(B * T * C * K);
    dxs.assign(B * T * C, 0.0);
    EosGrads g;
    g.d_shrink = lcsm::view(ds.data(), {B, T, C, K});
    g.d_input = detail::as_eos_column(dxs, B, T, C);
    backward(mapped.eos(),
             View<const double, 4>(dys.data(), {B, T, C, 1}, {dys.stride(0), dys.stride(1), dys.stride(2), 1}), {}, g);
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t c = 0; c < C; ++c)
          for (index_t j = 0; j <= std::min(t, K - 1); ++j) {
            const index_t r = mirrored ? j - t : t - j;
            const index_t i = op.center() + r;
            if (i >= 0 && i < da.size(1)) da(c, i) += ds[((b * T + t) * C + c) * K + j];
          }
  };
  std::vector<double> dx1, dx2;
  run(x, dy, false, dx1);
  if (!op.causal) {
    const std::vector<double> xr = detail::reversed(x, cu), dyr = detail::reversed(dy, cu);
    run(lcsm::view(xr.data(), {B, T, C}), lcsm::view(dyr.data(), {B, T, C}), true, dx2);
    dx2 = detail::reversed(lcsm::view(static_cast<const double*>(dx2.data()), {B, T, C}), cu);
    for (index_t b = 0; b < B; ++b)  // the r = 0 term both instances count
      for (index_t t = 0; t < T; ++t)
        for (index_t c = 0; c < C; ++c) da(c, op.center()) -= dy(b, t, c) * x(b, t, c);
  }
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t c = 0; c < C; ++c) {
        const index_t i = (b * T + t) * C + c;
        dx(b, t, c) = op.causal ? dx1[i] : dx1[i] + dx2[i] - detail::coefficient(op, c, 0) * dy(b, t, c);
      }
}

}  // namespace lcsm::reference
