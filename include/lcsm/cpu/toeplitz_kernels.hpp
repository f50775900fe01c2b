// The direct O(l^2) Toeplitz sums over a block of w channels side by side (the inner loop runs over
// the channels, so it vectorises): the short-sequence path, and the fallback for columns holding
// NaN or Inf.
#pragma once

#include <algorithm>
#include <vector>

#include "lcsm/core/tensor.hpp"

namespace lcsm::cpu::detail {

// One block of a sequence: w channels side by side, rows of `ld` elements (row t holds token t).
template <class S>
struct Block {
  S* data;
  index_t ld;
  S& operator()(index_t t, index_t lane) const { return data[t * ld + lane]; }
};
template <class S>
struct ConstBlock {
  const S* data;
  index_t ld;
  const S* row(index_t t) const { return data + t * ld; }
};

// Coefficients of a block of channels: row i holds a_{i - center} of each lane.
template <class S>
struct CoefficientBlock {
  const S* data;
  index_t ld, center, count;
  bool causal;
  // The row of a_r, or null outside the range.
  const S* row(index_t r) const {
    const index_t i = center + r;
    return (causal && r < 0) || i < 0 || i >= count ? nullptr : data + i * ld;
  }
};

// y[t] = sum_s a_{t-s} x[s] over l tokens and w lanes.
template <class S>
void direct_forward(const CoefficientBlock<S>& a, ConstBlock<S> x, Block<S> y, index_t l, index_t w) {
  for (index_t t = 0; t < l; ++t) {
    S* out = y.data + t * y.ld;
    for (index_t lane = 0; lane < w; ++lane) out[lane] = S(0);
    for (index_t s = 0; s < (a.causal ? t + 1 : l); ++s) {
      const S* ar = a.row(t - s);
      if (!ar) continue;
      const S* xs = x.row(s);
      for (index_t lane = 0; lane < w; ++lane) out[lane] += ar[lane] * xs[lane];
    }
  }
}

// dx[s] = sum_t a_{t-s} dy[t] over l tokens and w lanes.
template <class S>
void direct_input_grad(const CoefficientBlock<S>& a, ConstBlock<S> dy, Block<S> dx, index_t l, index_t w) {
  for (index_t s = 0; s < l; ++s) {
    S* out = dx.data + s * dx.ld;
    for (index_t lane = 0; lane < w; ++lane) out[lane] = S(0);
    for (index_t t = a.causal ? s : 0; t < l; ++t) {
      const S* ar = a.row(t - s);
      if (!ar) continue;
      const S* g = dy.row(t);
      for (index_t lane = 0; lane < w; ++lane) out[lane] += ar[lane] * g[lane];
    }
  }
}

// da[center + r][lane] += sum_t dy[t] x[t - r] for every r the sequence reaches (|r| < l), da rows
// of `ld` doubles; `acc` is scratch for w lanes.
template <class S>
void direct_coefficient_grad(ConstBlock<S> x, ConstBlock<S> dy, index_t l, index_t w, bool causal, index_t center,
                             double* da, index_t ld, std::vector<S>& acc) {
  acc.resize(w);
  for (index_t r = causal ? 0 : -(l - 1); r < l; ++r) {
    std::fill(acc.begin(), acc.end(), S(0));
    for (index_t t = std::max<index_t>(0, r); t < std::min(l, l + r); ++t) {
      const S* g = dy.row(t);
      const S* xs = x.row(t - r);
      for (index_t lane = 0; lane < w; ++lane) acc[lane] += g[lane] * xs[lane];
    }
    double* out = da + (center + r) * ld;
    for (index_t lane = 0; lane < w; ++lane) out[lane] += static_cast<double>(acc[lane]);
  }
}

}  // namespace lcsm::cpu::detail
