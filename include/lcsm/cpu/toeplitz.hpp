// Toeplitz long convolution on the CPU: y[b, t, c] = sum_s a[c, t - s] x[b, s, c].
//
// Work runs over blocks of 16 channels (and over sequences as well when there are fewer blocks
// than threads). Per sequence, op.use_fft(length) picks the path:
// - direct: the O(l^2) sums with the block's channels side by side (cpu/toeplitz_kernels.hpp);
// - FFT (cpu/toeplitz_fft_blocks.hpp): the block's channels as the 16 lanes of one real FFT of length
//   L = 2^k >= 2l - 1 (a linear, not circular, convolution), a_r at row r mod L:
//     y = IFFT(A . X)[0, l),  dx = IFFT(conj(A) . DY)[0, l),  da_r = IFFT(sum DY . conj(X))[r mod L].
//   The coefficient spectrum of a block is made once per call and sequence length and reused for
//   every sequence of that length; backward sums the da spectra of all sequences of one FFT length
//   before one inverse FFT.
// NaN and Inf: an FFT would spread one non-finite value over every output of its channel, so a
// (sequence, channel) whose x (dy) column or coefficient row holds one is zeroed in the FFT and
// recomputed by the direct sums, where a non-finite value reaches exactly the outputs whose sums
// contain it. That column then costs O(l^2).
#pragma once

#include <cmath>
#include <complex>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/cpu/device.hpp"
#include "lcsm/cpu/toeplitz_fft_blocks.hpp"
#include "lcsm/cpu/toeplitz_kernels.hpp"
#include "lcsm/ops/problem.hpp"
#include "lcsm/ops/toeplitz.hpp"

namespace lcsm {
namespace cpu::detail {

// Blocks of channels and, when there are fewer blocks than threads, single sequences.
struct ToeplitzItem {
  index_t c0, w, seq0, seq1;
};

inline std::vector<ToeplitzItem> toeplitz_items(index_t C, index_t sequences, int threads) {
  const index_t w = std::max<index_t>(1, std::min<index_t>(kToeplitzBlock, (C + threads - 1) / threads));
  const index_t blocks = (C + w - 1) / w;
  const bool split = blocks < threads && sequences > 1;
  std::vector<ToeplitzItem> items;
  for (index_t c0 = 0; c0 < C; c0 += w)
    if (split)
      for (index_t n = 0; n < sequences; ++n) items.push_back({c0, std::min(w, C - c0), n, n + 1});
    else items.push_back({c0, std::min(w, C - c0), 0, sequences});
  return items;
}

// Whether every element of a strided column is finite (NaN * 0 and Inf * 0 are NaN).
template <class T>
bool column_finite(const T* p, index_t stride, index_t count) {
  T probe = T(0);
  for (index_t i = 0; i < count; ++i) probe += p[i * stride] * T(0);
  return !std::isnan(probe);
}

// Coefficients of channels [c0, c0 + w) for a sequence of length l, transposed into buf:
// row (center + r) holds a_r of each lane for |r| < l (r >= 0 when causal).
template <class T, class S>
CoefficientBlock<S> load_coefficients(const ToeplitzConvolution<T>& op, index_t c0, index_t w, index_t l,
                                      std::vector<S>& buf) {
  const index_t center = op.causal ? 0 : l - 1, rows = op.causal ? l : 2 * l - 1;
  buf.resize(static_cast<std::size_t>(std::max<index_t>(rows, 1) * w));
  for (index_t i = 0; i < rows; ++i)
    for (index_t lane = 0; lane < w; ++lane)
      buf[i * w + lane] = static_cast<S>(op.coefficients(c0 + lane, op.center() + i - center));
  return {buf.data(), w, center, rows, op.causal};
}

// Rows [start, start + l) of channels [c0, c0 + w) of x into a dense [l][w] block, and back.
template <class T, class S>
void load_block(const View<const T, 3>& x, const Sequence& sq, index_t c0, index_t w, std::vector<S>& buf) {
  buf.resize(static_cast<std::size_t>(std::max<index_t>(sq.length * w, 1)));
  for (index_t t = 0; t < sq.length; ++t)
    for (index_t lane = 0; lane < w; ++lane) buf[t * w + lane] = static_cast<S>(x(sq.batch, sq.start + t, c0 + lane));
}
template <class T, class S>
void store_block(const std::vector<S>& buf, const View<T, 3>& y, const Sequence& sq, index_t c0, index_t w) {
  for (index_t t = 0; t < sq.length; ++t)
    for (index_t lane = 0; lane < w; ++lane) y(sq.batch, sq.start + t, c0 + lane) = static_cast<T>(buf[t * w + lane]);
}

// Per-worker scratch.
template <class T>
struct ToeplitzWorkspace {
  using S = state_t<T>;
  FftBlocks<T> fft;
  std::vector<S> coef, xb, yb, gb, acc;
};

// Which lanes of channels [c0, c0 + w) hold a non-finite coefficient (lanes past w: none).
template <class T>
void coefficient_flags(const ToeplitzConvolution<T>& op, index_t c0, index_t w, bool* bad) {
  const index_t count = op.coefficients.size(1);  // 0 for n = 0, where the data may be null
  for (int lane = 0; lane < kToeplitzBlock; ++lane)
    bad[lane] =
        lane < w && count > 0 && !column_finite(&op.coefficients(c0 + lane, 0), op.coefficients.stride(1), count);
}

// The direct sums for one lane (a channel whose FFT would spread a non-finite value).
template <class T>
void direct_forward_lane(ToeplitzWorkspace<T>& ws, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                         const View<T, 3>& y, const Sequence& sq, index_t c) {
  using S = state_t<T>;
  const auto a = load_coefficients(op, c, 1, sq.length, ws.coef);
  load_block(x, sq, c, 1, ws.xb);
  ws.yb.resize(ws.xb.size());
  direct_forward<S>(a, {ws.xb.data(), 1}, {ws.yb.data(), 1}, sq.length, 1);
  store_block(ws.yb, y, sq, c, 1);
}

// y for the FFT sequences of one item.
template <class T>
void fft_forward_item(ToeplitzWorkspace<T>& ws, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                      const View<T, 3>& y, const Sequences& seqs, const ToeplitzItem& it) {
  using F = fft_t<T>;
  constexpr int W = kToeplitzBlock;
  FftBlocks<T>& f = ws.fft;
  bool bad_a[W], bad_x[W], skip[W];
  coefficient_flags(op, it.c0, it.w, bad_a);
  index_t spectrum_of = -1;
  for (index_t n = it.seq0; n < it.seq1; ++n) {
    const Sequence sq = seqs[n];
    if (sq.length == 0 || !op.use_fft(sq.length)) continue;
    const index_t L = fft_length(2 * sq.length - 1);
    if (f.L() != L) spectrum_of = -1;
    f.plan(L);
    if (spectrum_of != sq.length) {
      coefficient_spectrum(f, op, it.c0, it.w, sq.length, bad_a);
      spectrum_of = sq.length;
    }
    load_fft_block(x, sq, it.c0, it.w, f.buf, bad_x);
    f.fft.forward(f.buf.data(), f.xre.data(), f.xim.data());
    spectrum_product(f.are, f.aim, false, f.xre, f.xim, F(1) / static_cast<F>(L), f.yre, f.yim);
    f.fft.inverse(f.yre.data(), f.yim.data(), f.buf.data());
    for (int lane = 0; lane < W; ++lane) skip[lane] = bad_a[lane] || bad_x[lane];
    store_fft_block(f.buf, y, sq, it.c0, it.w, skip);
    for (index_t lane = 0; lane < it.w; ++lane)
      if (skip[lane]) direct_forward_lane(ws, op, x, y, sq, it.c0 + lane);
  }
}

// dx and da (added to dacc, [count][w] doubles) for the FFT sequences of one item. The da spectra
// DY . conj(X) of all sequences of one FFT length are summed before one inverse FFT.
template <class T>
void fft_backward_item(ToeplitzWorkspace<T>& ws, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                       const View<const T, 3>& dy, const View<T, 3>& dx, bool want_da, const Sequences& seqs,
                       const ToeplitzItem& it, std::vector<double>& dacc) {
  using S = state_t<T>;
  using F = fft_t<T>;
  constexpr int W = kToeplitzBlock;
  FftBlocks<T>& f = ws.fft;
  const index_t w = it.w, center = op.center();
  bool bad_a[W], bad_x[W], bad_dy[W], skip[W];
  coefficient_flags(op, it.c0, w, bad_a);
  index_t spectrum_of = -1, acc_max = 0;
  bool acc_open = false;
  auto flush = [&] {  // da_r += IFFT(sum DY . conj(X))[r mod L] / L
    if (!acc_open) return;
    const index_t L = f.L();
    f.fft.inverse(f.accre.data(), f.accim.data(), f.buf.data());
    const double scale = 1.0 / static_cast<double>(L);
    for (index_t r = 0; r < acc_max; ++r)
      for (index_t lane = 0; lane < w; ++lane) dacc[(center + r) * w + lane] += scale * f.buf[r * W + lane];
    if (!op.causal)
      for (index_t r = 1; r < acc_max; ++r)
        for (index_t lane = 0; lane < w; ++lane) dacc[(center - r) * w + lane] += scale * f.buf[(L - r) * W + lane];
    acc_open = false;
  };
  for (index_t n = it.seq0; n < it.seq1; ++n) {
    const Sequence sq = seqs[n];
    const index_t l = sq.length;
    if (l == 0 || !op.use_fft(l)) continue;
    const index_t L = fft_length(2 * l - 1);
    if (f.L() != L) {
      flush();
      spectrum_of = -1;
    }
    f.plan(L);
    if (dx.present() && spectrum_of != l) {
      coefficient_spectrum(f, op, it.c0, w, l, bad_a);
      spectrum_of = l;
    }
    if (want_da) {
      load_fft_block(x, sq, it.c0, w, f.buf, bad_x);
      f.fft.forward(f.buf.data(), f.xre.data(), f.xim.data());
    }
    load_fft_block(dy, sq, it.c0, w, f.buf, bad_dy);
    f.fft.forward(f.buf.data(), f.yre.data(), f.yim.data());
    if (want_da) {
      if (!acc_open) {
        std::fill(f.accre.begin(), f.accre.end(), F(0));
        std::fill(f.accim.begin(), f.accim.end(), F(0));
        acc_open = true;
        acc_max = 0;
      }
      for (std::size_t e = 0; e < f.accre.size(); ++e) {  // += DY conj(X)
        f.accre[e] += f.yre[e] * f.xre[e] + f.yim[e] * f.xim[e];
        f.accim[e] += f.yim[e] * f.xre[e] - f.yre[e] * f.xim[e];
      }
      acc_max = std::max(acc_max, l);
      for (index_t lane = 0; lane < w; ++lane)  // lanes zeroed for the FFT: their direct sums
        if (bad_x[lane] || bad_dy[lane]) {
          load_block(x, sq, it.c0 + lane, 1, ws.xb);
          load_block(dy, sq, it.c0 + lane, 1, ws.gb);
          direct_coefficient_grad<S>({ws.xb.data(), 1}, {ws.gb.data(), 1}, l, 1, op.causal, center, dacc.data() + lane,
                                     w, ws.acc);
        }
    }
    if (dx.present()) {  // DX = conj(A) DY
      spectrum_product(f.are, f.aim, true, f.yre, f.yim, F(1) / static_cast<F>(L), f.xre, f.xim);
      f.fft.inverse(f.xre.data(), f.xim.data(), f.buf.data());
      for (int lane = 0; lane < W; ++lane) skip[lane] = bad_a[lane] || bad_dy[lane];
      store_fft_block(f.buf, dx, sq, it.c0, w, skip);
      for (index_t lane = 0; lane < w; ++lane)
        if (skip[lane]) {
          const auto a = load_coefficients(op, it.c0 + lane, 1, l, ws.coef);
          load_block(dy, sq, it.c0 + lane, 1, ws.gb);
          ws.yb.resize(ws.gb.size());
          direct_input_grad<S>(a, {ws.gb.data(), 1}, {ws.yb.data(), 1}, l, 1);
          store_block(ws.yb, dx, sq, it.c0 + lane, 1);
        }
    }
  }
  flush();
}

}  // namespace cpu::detail

// y = Toeplitz(op.coefficients) x per channel: x, y [B, n, C] (any strides), coefficients [C, n]
// (causal) or [C, 2n - 1]. With cu_seqlens, the packed sequences of row 0 are convolved
// separately and the coefficients cover the longest one.
template <class T>
void forward(const cpu::Device& device, const ToeplitzConvolution<T>& op, detail::identity_t<View<const T, 3>> x,
             View<T, 3> y, const CuSeqlens& cu_seqlens = {}) {
  using namespace cpu::detail;
  using S = state_t<T>;
  const char* where = "lcsm::forward(cpu, ToeplitzConvolution)";
  const auto p = lcsm::detail::check_toeplitz_forward(where, op, x, y, cu_seqlens);
  if (p.batch == 0 || p.time == 0) return;  // no tokens (a channel count bounded by no view's memory)
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  const int threads = device.thread_count();
  const auto items = toeplitz_items(p.channels, p.sequences, threads);
  WorkspacePool<ToeplitzWorkspace<T>> pool(threads);

  cpu::parallel_for(threads, static_cast<index_t>(items.size()), [&](index_t i, int worker) {
    const ToeplitzItem it = items[i];
    ToeplitzWorkspace<T>& ws = pool[worker];
    // Direct sequences: the block's channels side by side.
    for (index_t n = it.seq0; n < it.seq1; ++n) {
      const Sequence sq = seqs[n];
      if (sq.length == 0 || op.use_fft(sq.length)) continue;
      const auto a = load_coefficients(op, it.c0, it.w, sq.length, ws.coef);
      load_block(x, sq, it.c0, it.w, ws.xb);
      ws.yb.resize(ws.xb.size());
      direct_forward<S>(a, {ws.xb.data(), it.w}, {ws.yb.data(), it.w}, sq.length, it.w);
      store_block(ws.yb, y, sq, it.c0, it.w);
    }
    // FFT sequences: the block's channels as the lanes of one transform.
    fft_forward_item(ws, op, x, y, seqs, it);
  });
}

// Gradients of forward: dx[s] = sum_t a[t - s] dy[t] ([B, n, C]) and da[r] = sum_b sum_t dy[t] x[t - r]
// (the shape of op.coefficients, summed over the batch; entries no sequence reaches are 0). Either
// may be absent (not computed).
template <class T>
void backward(const cpu::Device& device, const ToeplitzConvolution<T>& op, detail::identity_t<View<const T, 3>> x,
              detail::identity_t<View<const T, 3>> dy, detail::identity_t<View<T, 3>> dx, View<T, 2> da,
              const CuSeqlens& cu_seqlens = {}) {
  using namespace cpu::detail;
  using S = state_t<T>;
  const char* where = "lcsm::backward(cpu, ToeplitzConvolution)";
  const auto p = lcsm::detail::check_toeplitz_backward(where, op, x, dy, dx, da, cu_seqlens);
  if (!dx.present() && !da.present()) return;
  if (p.batch == 0 || p.time == 0) {  // no tokens: da = 0 (a channel count bounded by no other view)
    if (da.numel() > 0)
      for (index_t c = 0; c < da.size(0); ++c)
        for (index_t r = 0; r < da.size(1); ++r) da(c, r) = T(0);
    return;
  }
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  const int threads = device.thread_count();
  const auto items = toeplitz_items(p.channels, p.sequences, threads);
  const bool split = !items.empty() && items[0].seq1 - items[0].seq0 < p.sequences;
  const index_t count = op.coefficients.size(1);
  WorkspacePool<ToeplitzWorkspace<T>> pool(threads);
  std::vector<std::vector<double>> partial(split && da.present() ? items.size() : 0);

  cpu::parallel_for(threads, static_cast<index_t>(items.size()), [&](index_t i, int worker) {
    const ToeplitzItem it = items[i];
    ToeplitzWorkspace<T>& ws = pool[worker];
    std::vector<double> dacc(da.present() ? static_cast<std::size_t>(count * it.w) : 0, 0.0);
    for (index_t n = it.seq0; n < it.seq1; ++n) {
      const Sequence sq = seqs[n];
      if (sq.length == 0 || op.use_fft(sq.length)) continue;
      load_block(dy, sq, it.c0, it.w, ws.gb);
      if (da.present()) {
        load_block(x, sq, it.c0, it.w, ws.xb);
        direct_coefficient_grad<S>({ws.xb.data(), it.w}, {ws.gb.data(), it.w}, sq.length, it.w, op.causal, op.center(),
                                   dacc.data(), it.w, ws.acc);
      }
      if (dx.present()) {
        const auto a = load_coefficients(op, it.c0, it.w, sq.length, ws.coef);
        ws.yb.resize(ws.gb.size());
        direct_input_grad<S>(a, {ws.gb.data(), it.w}, {ws.yb.data(), it.w}, sq.length, it.w);
        store_block(ws.yb, dx, sq, it.c0, it.w);
      }
    }
    fft_backward_item(ws, op, x, dy, dx, da.present(), seqs, it, dacc);
    if (!da.present()) return;
    if (split) {
      partial[i] = std::move(dacc);
      return;
    }
    for (index_t k = 0; k < count; ++k)
      for (index_t lane = 0; lane < it.w; ++lane) da(it.c0 + lane, k) = static_cast<T>(dacc[k * it.w + lane]);
  });
  if (!split || !da.present()) return;
  std::vector<double> sum;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const ToeplitzItem it = items[i];
    if (it.seq0 == 0) sum.assign(static_cast<std::size_t>(count * it.w), 0.0);
    for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += partial[i][k];
    if (it.seq1 == p.sequences)
      for (index_t k = 0; k < count; ++k)
        for (index_t lane = 0; lane < it.w; ++lane) da(it.c0 + lane, k) = static_cast<T>(sum[k * it.w + lane]);
  }
}

// Decode with the causal form: x_t, y_t [B, m, C] are the next m tokens of every sequence;
// history.inputs [B, n_max, C] holds the history.position tokens before them (the caller fills it,
// or builds it with step from position 0). Each token is written into the history and
// y_t = sum_{s <= t} a_{t-s} x_s over the whole history: O(t) per token and channel, and the
// coefficients must be [C, n_max]. Advances history.position by m.
template <class T>
void step(const cpu::Device& device, const ToeplitzConvolution<T>& op, detail::identity_t<View<const T, 3>> x_t,
          View<T, 3> y_t, ToeplitzHistory<T>& history) {
  using S = state_t<T>;
  const char* where = "lcsm::step(cpu, ToeplitzConvolution)";
  const auto p = lcsm::detail::check_toeplitz_step(where, op, x_t, y_t, history);
  const View<T, 3>& h = history.inputs;
  const index_t m = p.time;

  const index_t C = p.channels, position = history.position;
  constexpr index_t kChannels = 64;
  const index_t blocks = (C + kChannels - 1) / kChannels;
  // A decode of a few thousand products is not worth a thread.
  const index_t work = lcsm::detail::saturating_mul(lcsm::detail::saturating_mul(p.batch * C, m), position + m);
  const int threads = static_cast<int>(std::min<index_t>(device.thread_count(), std::max<index_t>(1, work >> 16)));
  using StridedMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;
  cpu::parallel_for(threads, p.batch * blocks, [&](index_t item, int) {
    const index_t b = item / blocks, c0 = (item % blocks) * kChannels, c1 = std::min(C, c0 + kChannels);
    for (index_t i = 0; i < m; ++i) {
      const index_t t = position + i;
      for (index_t c = c0; c < c1; ++c) h(b, t, c) = x_t(b, i, c);
      for (index_t c = c0; c < c1; ++c) {
        // y = sum_s a[t - s] h[s]: the coefficients reversed against the history.
        const T* a = &op.coefficients(c, 0);
        const T* hs = &h(b, 0, c);
        const index_t sa = op.coefficients.stride(1), sh = h.stride(1);
        S acc;
        if (sa == 1 && sh == 1) {
          acc = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(a, t + 1)
                    .reverse()
                    .cwiseProduct(Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(hs, t + 1))
                    .template cast<S>()
                    .sum();
        } else {
          acc = StridedMap(a, t + 1, Eigen::InnerStride<>(sa))
                    .reverse()
                    .cwiseProduct(StridedMap(hs, t + 1, Eigen::InnerStride<>(sh)))
                    .template cast<S>()
                    .sum();
        }
        y_t(b, i, c) = static_cast<T>(acc);
      }
    }
  });
  history.position = position + m;
}

}  // namespace lcsm
