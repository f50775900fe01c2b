// The two ways the CPU backend evaluates one channel's Toeplitz products on one sequence:
//
// - direct: the O(l^2) sums over a block of w channels side by side (the inner loop runs over the
//   channels, so it vectorises); also the fallback for columns holding NaN or Inf;
// - FFT: linear convolution / correlation through real FFTs of length L >= 2l - 1 (no circular
//   wrap-around), with a_r stored at index r mod L (negative r at the end), so that
//     y  = IFFT(A . X)[0, l),  dx = IFFT(conj(A) . DY)[0, l),  da_r = IFFT(DY . conj(X))[r mod L].
//
// Eigen's FFT module (kissfft backend): one Eigen::FFT object per worker keeps the plans and
// twiddles of every length it has seen, reused across channels and sequences.
#pragma once

#include <algorithm>
#include <complex>
#include <unsupported/Eigen/FFT>
#include <vector>

#include "lcsm/core/tensor.hpp"

namespace lcsm::cpu::detail {

// The smallest L >= at_least with L = 4 * 2^a 3^b 5^c: kissfft's radices, and a multiple of 4 so
// that its real transform runs as a half-length complex one.
inline index_t fft_length(index_t at_least) {
  index_t best = 4;
  while (best < at_least) best *= 2;
  for (index_t p5 = 4; p5 < best; p5 *= 5)
    for (index_t p35 = p5; p35 < best; p35 *= 3) {
      index_t v = p35;
      while (v < at_least) v *= 2;
      best = std::min(best, v);
    }
  return best;
}

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

// Per-worker FFT state: the plans, and buffers for one channel of one sequence.
template <class F>
struct FftWorkspace {
  using Complex = std::complex<F>;
  Eigen::FFT<F> fft;
  std::vector<F> real;
  std::vector<Complex> a, x, y, acc;
  index_t length = 0;  // L of the buffers

  FftWorkspace() {
    fft.SetFlag(Eigen::FFT<F>::HalfSpectrum);
    fft.SetFlag(Eigen::FFT<F>::Unscaled);
  }
  void resize(index_t L) {
    length = L;
    real.assign(L, F(0));
    const std::size_t bins = static_cast<std::size_t>(L / 2 + 1);
    a.resize(bins);
    x.resize(bins);
    y.resize(bins);
    acc.resize(bins);
  }
  // spectrum = FFT of the real buffer (which the caller filled, zero-padded to L).
  void forward(std::vector<Complex>& spectrum) { fft.fwd(spectrum.data(), real.data(), static_cast<int>(length)); }
  // real = IFFT(spectrum) (unscaled: times L).
  void inverse(const std::vector<Complex>& spectrum) {
    fft.inv(real.data(), spectrum.data(), static_cast<int>(length));
  }
  void clear_real() { std::fill(real.begin(), real.end(), F(0)); }
};

// Fills ws.real with a_r at index r mod L for the r a sequence of length l uses (|r| < l; causal:
// r >= 0), read through `coef(r)`, and transforms it into ws.a.
template <class F, class Coef>
void coefficient_spectrum(FftWorkspace<F>& ws, index_t l, bool causal, Coef&& coef) {
  ws.clear_real();
  const index_t L = ws.length;
  for (index_t r = 0; r < l; ++r) ws.real[r] = static_cast<F>(coef(r));
  if (!causal)
    for (index_t r = 1; r < l; ++r) ws.real[L - r] = static_cast<F>(coef(-r));
  ws.forward(ws.a);
}

}  // namespace lcsm::cpu::detail
