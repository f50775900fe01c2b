// Real FFTs of W independent signals side by side ("lanes"): element t of every lane is one row
// of W contiguous values, so each butterfly is a loop over the W lanes that the compiler turns
// into SIMD, and a block of W channels of a [B, n, C] tensor is read in full cache lines. Lengths
// are powers of two (L >= 4); a real transform of length L runs as a complex one of N = L / 2
// (z_j = x_2j + i x_2j+1) plus one pass that separates the even and odd halves.
//
// The complex transform is radix 2, in place and depth first (so that every level below a size
// that fits the caches runs there): decimation in frequency forward (output in bit-reversed order)
// and decimation in time inverse (input in bit-reversed order); the real-transform pass reads and
// writes through the bit-reversal table. Twiddles are computed in double once per length. Forward has the sign -1;
// inverse +1 and no scaling (IFFT(FFT(x)) = L x).
#pragma once

#include <cmath>
#include <vector>

#include "lcsm/core/tensor.hpp"

namespace lcsm::cpu::detail {

// The smallest power of two >= max(at_least, 4).
inline index_t fft_length(index_t at_least) {
  index_t L = 4;
  while (L < at_least) L *= 2;
  return L;
}

template <class F, int W>
class LaneFft {
 public:
  static constexpr int lanes = W;

  index_t length() const { return 2 * n_; }
  index_t bins() const { return n_ + 1; }

  // Twiddles for real transforms of length L (a power of two >= 4), and scratch.
  void plan(index_t L) {
    if (2 * n_ == L) return;
    n_ = L / 2;
    const double pi = 3.14159265358979323846;
    wr_.resize(n_);
    wi_.resize(n_);
    rev_.assign(n_, 0);
    for (index_t k = 0; k < n_; ++k)
      for (index_t bit = 1, r = n_ / 2; bit < n_; bit *= 2, r /= 2)
        if (k & bit) rev_[k] |= r;
    for (index_t k = 0; k < n_; ++k) {  // w_N^k = exp(-2 pi i k / N)
      wr_[k] = static_cast<F>(std::cos(2 * pi * k / n_));
      wi_[k] = static_cast<F>(-std::sin(2 * pi * k / n_));
    }
    hr_.resize(n_);
    hi_.resize(n_);
    for (index_t i = 0; i < n_; ++i) {  // w_L^k = exp(-pi i k / N) for k = rev(i), at row i
      hr_[i] = static_cast<F>(std::cos(pi * rev_[i] / n_));
      hi_[i] = static_cast<F>(-std::sin(pi * rev_[i] / n_));
    }
    for (auto* b : {&ar_, &ai_}) b->assign(static_cast<std::size_t>(n_ * W), F(0));
  }

  // re, im [N + 1][W] = FFT of x [L][W] (rows of W lanes), bins in this class's order: bin k at
  // row rev(k) for k < N, bin N at row N. Products of two spectra are elementwise, so the order
  // only has to be the same for both (and inverse() takes it back).
  void forward(const F* x, F* re, F* im) {
    for (index_t j = 0; j < n_; ++j)
      for (int l = 0; l < W; ++l) {
        ar_[j * W + l] = x[(2 * j) * W + l];
        ai_[j * W + l] = x[(2 * j + 1) * W + l];
      }
    dif(ar_.data(), ai_.data(), n_);  // Z_k at row rev(k)
    // X_k = E_k + w_L^k O_k, E_k = (Z_k + conj Z_{N-k}) / 2, O_k = (Z_k - conj Z_{N-k}) / 2i, and
    // X_N = E_0 - O_0. Z_{N-k} sits at the partner row of rev(k) (see partner()).
    for (index_t i = 0; i < n_; ++i) {
      const index_t j = partner(i);
      const F *pr = &ar_[i * W], *pi = &ai_[i * W], *qr = &ar_[j * W], *qi = &ai_[j * W];
      const F cr = hr_[i], ci = hi_[i];
      F *outr = re + i * W, *outi = im + i * W;
      for (int l = 0; l < W; ++l) {
        const F er = F(0.5) * (pr[l] + qr[l]), ei = F(0.5) * (pi[l] - qi[l]);
        const F orr = F(0.5) * (pi[l] + qi[l]), oi = F(-0.5) * (pr[l] - qr[l]);
        outr[l] = er + cr * orr - ci * oi;
        outi[l] = ei + cr * oi + ci * orr;
        if (i == 0) {
          re[n_ * W + l] = er - orr;
          im[n_ * W + l] = ei - oi;
        }
      }
    }
  }

  // x [L][W] = L * IFFT of the Hermitian spectrum re, im [N + 1][W] (forward()'s order).
  void inverse(const F* re, const F* im, F* x) {
    // E_k = X_k + conj X_{N-k}, O_k = (X_k - conj X_{N-k}) conj(w_L^k), Z_k = E_k + i O_k, at row rev(k).
    for (index_t i = 0; i < n_; ++i) {
      const index_t j = i == 0 ? n_ : partner(i);
      const F *pr = re + i * W, *pi = im + i * W, *qr = re + j * W, *qi = im + j * W;
      const F cr = hr_[i], ci = -hi_[i];
      for (int l = 0; l < W; ++l) {
        const F er = pr[l] + qr[l], ei = pi[l] - qi[l];
        const F dr = pr[l] - qr[l], di = pi[l] + qi[l];
        const F orr = dr * cr - di * ci, oi = dr * ci + di * cr;
        ar_[i * W + l] = er - oi;
        ai_[i * W + l] = ei + orr;
      }
    }
    dit(ar_.data(), ai_.data(), n_);
    for (index_t j = 0; j < n_; ++j)
      for (int l = 0; l < W; ++l) {
        x[(2 * j) * W + l] = ar_[j * W + l];
        x[(2 * j + 1) * W + l] = ai_[j * W + l];
      }
  }

 private:
  // The row of Z_{N-k} when row i holds Z_k (k = rev(i)): itself for i < 2, else the mirror of i in
  // its octave [2^m, 2^(m+1)), 3 * 2^m - 1 - i. Both walk their octave sequentially.
  static index_t partner(index_t i) {
    if (i < 2) return i;
    index_t m = 1;
    while (m * 2 <= i) m *= 2;
    return 3 * m - 1 - i;
  }

  // One radix-2 level over n rows at x: decimation in frequency (forward: a + b, (a - b) w^j) or
  // its inverse, decimation in time (a + b conj(w^j), a - b conj(w^j)), w = w_n = w_N^(N / n).
  void butterflies(F* xr, F* xi, index_t n, bool inverse) {
    const index_t h = n / 2, step = n_ / n;
    F *ar = xr, *ai = xi, *br = xr + h * W, *bi = xi + h * W;
    for (index_t j = 0; j < h; ++j) {
      const F wr = wr_[j * step], wi = inverse ? -wi_[j * step] : wi_[j * step];
      F *a_r = ar + j * W, *a_i = ai + j * W, *b_r = br + j * W, *b_i = bi + j * W;
      if (!inverse) {
        for (int l = 0; l < W; ++l) {
          const F tr = a_r[l] - b_r[l], ti = a_i[l] - b_i[l];
          a_r[l] += b_r[l];
          a_i[l] += b_i[l];
          b_r[l] = tr * wr - ti * wi;
          b_i[l] = tr * wi + ti * wr;
        }
      } else {
        for (int l = 0; l < W; ++l) {
          const F tr = b_r[l] * wr - b_i[l] * wi, ti = b_r[l] * wi + b_i[l] * wr;
          b_r[l] = a_r[l] - tr;
          b_i[l] = a_i[l] - ti;
          a_r[l] += tr;
          a_i[l] += ti;
        }
      }
    }
  }

  // Forward: natural order in, bit-reversed order out. Depth first, so that once a sub-transform
  // fits the caches every level below it runs there.
  void dif(F* xr, F* xi, index_t n) {
    if (n < 2) return;
    butterflies(xr, xi, n, false);
    dif(xr, xi, n / 2);
    dif(xr + n / 2 * W, xi + n / 2 * W, n / 2);
  }
  // Inverse: bit-reversed order in, natural order out (times n).
  void dit(F* xr, F* xi, index_t n) {
    if (n < 2) return;
    dit(xr, xi, n / 2);
    dit(xr + n / 2 * W, xi + n / 2 * W, n / 2);
    butterflies(xr, xi, n, true);
  }

  index_t n_ = 0;
  std::vector<F> wr_, wi_, hr_, hi_, ar_, ai_;
  std::vector<index_t> rev_;  // bit reversal of log2 N bits
};

}  // namespace lcsm::cpu::detail
