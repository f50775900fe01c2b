// The FFT blocks of the CPU Toeplitz convolution (cpu/toeplitz.hpp): the channels of one work item
// as the kToeplitzBlock lanes of one real FFT (cpu/lane_fft.hpp) of length L, and the data movement
// around it: a sequence's rows in (non-finite lanes zeroed and flagged) and out, the coefficient
// spectrum (a_r at row r mod L), the products of spectra.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/cpu/lane_fft.hpp"
#include "lcsm/ops/toeplitz.hpp"

namespace lcsm::cpu::detail {

// The FFTs run in the state type: float for float inputs (the error this costs is measured in
// docs/performance.md), double for double.
template <class T>
using fft_t = state_t<T>;

constexpr int kToeplitzBlock = 16;  // channels per work item: the lanes of one FFT (full cache lines)

// The FFT of a block: W lanes, channels [c0, c0 + w) and zero lanes after them.
template <class T>
struct FftBlocks {
  using F = fft_t<T>;
  static constexpr int W = kToeplitzBlock;
  LaneFft<F, W> fft;
  std::vector<F> buf, are, aim, xre, xim, yre, yim, accre, accim;  // [L][W] and spectra [L / 2 + 1][W]
  void plan(index_t L) {
    if (fft.length() == L) return;
    fft.plan(L);
    buf.assign(static_cast<std::size_t>(L * W), F(0));
    for (auto* v : {&are, &aim, &xre, &xim, &yre, &yim, &accre, &accim})
      v->assign(static_cast<std::size_t>(fft.bins() * W), F(0));
  }
  index_t L() const { return fft.length(); }
};

// buf = rows [0, l) of channels [c0, c0 + w) of x, zero elsewhere; lanes holding a non-finite value
// are zeroed too and flagged in `bad` (they take the direct path).
template <class T, class F>
void load_fft_block(const View<const T, 3>& x, const Sequence& sq, index_t c0, index_t w, std::vector<F>& buf,
                    bool* bad) {
  constexpr int W = kToeplitzBlock;
  const T* base = &x(sq.batch, sq.start, c0);
  const index_t st = x.stride(1), sc = x.stride(2);
  F probe[W] = {};
  for (index_t t = 0; t < sq.length; ++t) {
    const T* src = base + t * st;
    F* row = buf.data() + t * W;
    if (sc == 1)
      for (index_t lane = 0; lane < w; ++lane) row[lane] = static_cast<F>(src[lane]);
    else
      for (index_t lane = 0; lane < w; ++lane) row[lane] = static_cast<F>(src[lane * sc]);
    for (index_t lane = w; lane < W; ++lane) row[lane] = F(0);
    for (int lane = 0; lane < W; ++lane) probe[lane] += row[lane] * F(0);
  }
  std::fill(buf.begin() + sq.length * W, buf.end(), F(0));
  for (int lane = 0; lane < W; ++lane) {
    bad[lane] = std::isnan(probe[lane]);
    if (bad[lane])
      for (index_t t = 0; t < sq.length; ++t) buf[t * W + lane] = F(0);
  }
}

// The coefficient spectrum of channels [c0, c0 + w) for sequences of length l: a_r at row r mod L
// (|r| < l), lanes whose coefficients are not finite (bad_a) zeroed.
template <class T>
void coefficient_spectrum(FftBlocks<T>& f, const ToeplitzConvolution<T>& op, index_t c0, index_t w, index_t l,
                          const bool* bad_a) {
  using F = fft_t<T>;
  constexpr int W = kToeplitzBlock;
  const index_t L = f.L(), center = op.center();
  std::fill(f.buf.begin(), f.buf.end(), F(0));
  for (index_t lane = 0; lane < w; ++lane) {
    if (bad_a[lane]) continue;
    for (index_t r = 0; r < l; ++r) f.buf[r * W + lane] = static_cast<F>(op.coefficients(c0 + lane, center + r));
    if (!op.causal)
      for (index_t r = 1; r < l; ++r)
        f.buf[(L - r) * W + lane] = static_cast<F>(op.coefficients(c0 + lane, center - r));
  }
  f.fft.forward(f.buf.data(), f.are.data(), f.aim.data());
}

// out = (conj(p) if conj_p else p) * q / scale, elementwise over spectra.
template <class F>
void spectrum_product(const std::vector<F>& pr, const std::vector<F>& pi, bool conj_p, const std::vector<F>& qr,
                      const std::vector<F>& qi, F scale, std::vector<F>& outr, std::vector<F>& outi) {
  const F s = conj_p ? F(-1) : F(1);
  for (std::size_t e = 0; e < outr.size(); ++e) {
    const F ar = pr[e], ai = s * pi[e];
    outr[e] = scale * (ar * qr[e] - ai * qi[e]);
    outi[e] = scale * (ar * qi[e] + ai * qr[e]);
  }
}

// Rows [0, l) of lanes [0, w) of buf into channels [c0, c0 + w) of y, skipping lanes in `skip`.
template <class T, class F>
void store_fft_block(const std::vector<F>& buf, const View<T, 3>& y, const Sequence& sq, index_t c0, index_t w,
                     const bool* skip) {
  constexpr int W = kToeplitzBlock;
  T* base = &y(sq.batch, sq.start, c0);
  const index_t st = y.stride(1), sc = y.stride(2);
  bool any_skip = false;
  for (index_t lane = 0; lane < w; ++lane) any_skip |= skip[lane];
  for (index_t t = 0; t < sq.length; ++t) {
    T* dst = base + t * st;
    const F* row = buf.data() + t * W;
    if (sc == 1 && !any_skip)
      for (index_t lane = 0; lane < w; ++lane) dst[lane] = static_cast<T>(row[lane]);
    else
      for (index_t lane = 0; lane < w; ++lane)
        if (!skip[lane]) dst[lane * sc] = static_cast<T>(row[lane]);
  }
}

}  // namespace lcsm::cpu::detail
