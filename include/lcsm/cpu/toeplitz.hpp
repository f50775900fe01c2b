// Toeplitz long convolution on the CPU: y[b, t, c] = sum_s a[c, t - s] x[b, s, c].
//
// Work runs over blocks of up to 16 channels (and over sequences as well when there are fewer
// blocks than threads). Per sequence, op.use_fft(length) picks the path:
// - direct: the O(l^2) sums with the block's channels side by side (cpu/toeplitz_kernels.hpp);
// - FFT: channel by channel, real FFTs of length L >= 2l - 1 (4 * 2^a 3^b 5^c). The coefficient
//   spectrum of a channel is made once and reused for every sequence of the same length; backward
//   sums the da spectra DY . conj(X) of all sequences of one FFT length before one inverse FFT.
// NaN and Inf: an FFT would spread one non-finite value over every output of its channel, so a
// (sequence, channel) whose x (dy) column or coefficient row holds one takes the direct path,
// where a non-finite value reaches exactly the outputs whose sums contain it. That column then
// costs O(l^2).
#pragma once

#include <cmath>
#include <complex>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/cpu/device.hpp"
#include "lcsm/cpu/toeplitz_kernels.hpp"
#include "lcsm/ops/problem.hpp"
#include "lcsm/ops/toeplitz.hpp"

namespace lcsm {
namespace cpu::detail {

// The FFTs run in the state type: float for float inputs (the error this costs is measured in
// docs/performance.md), double for double.
template <class T>
using fft_t = state_t<T>;

constexpr index_t kToeplitzBlock = 16;

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

// Column c of sequence sq into dst[0, l) and zeros up to dst.size(); returns whether it is finite.
template <class T, class F>
bool load_column(const View<const T, 3>& x, const Sequence& sq, index_t c, std::vector<F>& dst) {
  const T* p = &x(sq.batch, sq.start, c);
  const index_t st = x.stride(1);
  for (index_t t = 0; t < sq.length; ++t) dst[t] = static_cast<F>(p[t * st]);
  std::fill(dst.begin() + sq.length, dst.end(), F(0));
  return column_finite(dst.data(), 1, sq.length);
}
template <class T, class F>
void store_column(const std::vector<F>& src, F scale, const View<T, 3>& y, const Sequence& sq, index_t c) {
  T* p = &y(sq.batch, sq.start, c);
  const index_t st = y.stride(1);
  for (index_t t = 0; t < sq.length; ++t) p[t * st] = static_cast<T>(scale * src[t]);
}

// Per-worker scratch.
template <class T>
struct ToeplitzWorkspace {
  using S = state_t<T>;
  using F = fft_t<T>;
  FftWorkspace<F> fft;
  std::vector<S> coef, xb, yb, gb, lane_coef, acc;
};

// Whether channel c's coefficients are all finite.
template <class T>
bool coefficients_finite(const ToeplitzConvolution<T>& op, index_t c) {
  return column_finite(&op.coefficients(c, 0), op.coefficients.stride(1), op.coefficients.size(1));
}

// The spectrum of channel c's coefficients for sequences of length l, in ws.fft.a.
template <class T, class F>
void channel_spectrum(const ToeplitzConvolution<T>& op, FftWorkspace<F>& ws, index_t c, index_t l) {
  const index_t center = op.center();
  coefficient_spectrum(ws, l, op.causal, [&](index_t r) { return op.coefficients(c, center + r); });
}

// y for one (sequence, channel) through the FFT; false (nothing written) when x is not finite.
template <class T>
bool fft_forward_column(ToeplitzWorkspace<T>& ws, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                        const View<T, 3>& y, const Sequence& sq, index_t c, index_t& spectrum_of) {
  using F = fft_t<T>;
  auto& f = ws.fft;
  const index_t L = fft_length(2 * sq.length - 1);
  if (f.length != L) {
    f.resize(L);
    spectrum_of = -1;
  }
  if (spectrum_of != sq.length) {
    channel_spectrum(op, f, c, sq.length);
    spectrum_of = sq.length;
  }
  if (!load_column(x, sq, c, f.real)) return false;
  f.forward(f.x);
  for (std::size_t k = 0; k < f.y.size(); ++k) f.y[k] = f.a[k] * f.x[k];
  f.inverse(f.y);
  store_column(f.real, F(1) / static_cast<F>(L), y, sq, c);
  return true;
}

// dx and the da spectrum of the FFT sequences of one channel; non-finite columns take the direct
// sums. dacc: [count][w] doubles of the item, this channel's column at `lane`.
template <class T>
void fft_backward_channel(ToeplitzWorkspace<T>& ws, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                          const View<const T, 3>& dy, const View<T, 3>& dx, bool want_da, const Sequences& seqs,
                          const ToeplitzItem& it, index_t lane, std::vector<double>& dacc) {
  using S = state_t<T>;
  using F = fft_t<T>;
  auto& f = ws.fft;
  const index_t c = it.c0 + lane, w = it.w, center = op.center();
  const bool finite_a = coefficients_finite(op, c);
  index_t spectrum_of = -1, acc_max = 0;
  bool acc_open = false;
  auto flush = [&] {  // da_r += IFFT(sum DY . conj(X))[r mod L] / L
    if (!acc_open) return;
    f.inverse(f.acc);
    const double scale = 1.0 / static_cast<double>(f.length);
    for (index_t r = 0; r < acc_max; ++r) dacc[(center + r) * w + lane] += scale * f.real[r];
    if (!op.causal)
      for (index_t r = 1; r < acc_max; ++r) dacc[(center - r) * w + lane] += scale * f.real[f.length - r];
    acc_open = false;
  };
  for (index_t n = it.seq0; n < it.seq1; ++n) {
    const Sequence sq = seqs[n];
    const index_t l = sq.length;
    if (l == 0 || !op.use_fft(l)) continue;
    const index_t L = fft_length(2 * l - 1);
    if (f.length != L) {
      flush();
      f.resize(L);
      spectrum_of = -1;
    }
    const bool want_dx = dx.present();
    if (want_dx && finite_a && spectrum_of != l) {
      channel_spectrum(op, f, c, l);
      spectrum_of = l;
    }
    bool finite_x = true;
    if (want_da) {
      finite_x = load_column(x, sq, c, f.real);
      if (finite_x) f.forward(f.x);
    }
    const bool finite_dy = load_column(dy, sq, c, f.real);
    if (finite_dy) f.forward(f.y);
    if (want_da) {
      if (finite_x && finite_dy) {
        if (!acc_open) {
          std::fill(f.acc.begin(), f.acc.end(), typename FftWorkspace<F>::Complex(0));
          acc_open = true;
          acc_max = 0;
        }
        for (std::size_t k = 0; k < f.acc.size(); ++k) f.acc[k] += f.y[k] * std::conj(f.x[k]);
        acc_max = std::max(acc_max, l);
      } else {
        load_block(x, sq, c, 1, ws.xb);
        load_block(dy, sq, c, 1, ws.gb);
        direct_coefficient_grad<S>({ws.xb.data(), 1}, {ws.gb.data(), 1}, l, 1, op.causal, center, dacc.data() + lane, w,
                                   ws.acc);
      }
    }
    if (want_dx) {
      if (finite_a && finite_dy) {
        for (std::size_t k = 0; k < f.x.size(); ++k) f.x[k] = std::conj(f.a[k]) * f.y[k];
        f.inverse(f.x);
        store_column(f.real, F(1) / static_cast<F>(L), dx, sq, c);
      } else {
        const auto a = load_coefficients(op, c, 1, l, ws.lane_coef);
        load_block(dy, sq, c, 1, ws.gb);
        ws.yb.resize(ws.gb.size());
        direct_input_grad<S>(a, {ws.gb.data(), 1}, {ws.yb.data(), 1}, l, 1);
        store_block(ws.yb, dx, sq, c, 1);
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
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  const int threads = device.thread_count();
  const auto items = toeplitz_items(p.channels, p.sequences, threads);
  std::vector<ToeplitzWorkspace<T>> pool(threads);

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
    // FFT sequences: channel by channel, one coefficient spectrum per channel and length.
    for (index_t lane = 0; lane < it.w; ++lane) {
      const index_t c = it.c0 + lane;
      const bool finite_a = coefficients_finite(op, c);
      index_t spectrum_of = -1;
      for (index_t n = it.seq0; n < it.seq1; ++n) {
        const Sequence sq = seqs[n];
        if (sq.length == 0 || !op.use_fft(sq.length)) continue;
        if (finite_a && fft_forward_column(ws, op, x, y, sq, c, spectrum_of)) continue;
        // A non-finite value: the direct sums, so that it reaches only the outputs it is in.
        const auto a = load_coefficients(op, c, 1, sq.length, ws.lane_coef);
        load_block(x, sq, c, 1, ws.xb);
        ws.yb.resize(ws.xb.size());
        direct_forward<S>(a, {ws.xb.data(), 1}, {ws.yb.data(), 1}, sq.length, 1);
        store_block(ws.yb, y, sq, c, 1);
      }
    }
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
  const auto p = lcsm::detail::check_toeplitz_input(where, "x", x, cu_seqlens);
  op.check(where, p.channels, p.longest, !cu_seqlens.present());
  lcsm::detail::check_memory(where, "dy", dy);
  lcsm::detail::check_shape(where, "dy", dy, x.shape(), "[B, n, C], the shape of x");
  if (dx.present()) {
    lcsm::detail::check_output(where, "dx", dx);
    lcsm::detail::check_shape(where, "dx", dx, x.shape(), "[B, n, C], the shape of x");
    lcsm::detail::check_disjoint(where, "dx", dx, "x", x);
    lcsm::detail::check_disjoint(where, "dx", dx, "dy", dy);
    lcsm::detail::check_disjoint(where, "dx", dx, "op.coefficients", op.coefficients);
  }
  if (da.present()) {
    lcsm::detail::check_output(where, "da", da);
    lcsm::detail::check_shape(where, "da", da, op.coefficients.shape(), "[C, count], the shape of op.coefficients");
    lcsm::detail::check_disjoint(where, "da", da, "x", x);
    lcsm::detail::check_disjoint(where, "da", da, "dy", dy);
    lcsm::detail::check_disjoint(where, "da", da, "op.coefficients", op.coefficients);
    lcsm::detail::check_disjoint(where, "da", da, "dx", dx);
  }
  if (!dx.present() && !da.present()) return;
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  const int threads = device.thread_count();
  const auto items = toeplitz_items(p.channels, p.sequences, threads);
  const bool split = !items.empty() && items[0].seq1 - items[0].seq0 < p.sequences;
  const index_t count = op.coefficients.size(1);
  std::vector<ToeplitzWorkspace<T>> pool(threads);
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
    for (index_t lane = 0; lane < it.w; ++lane)
      fft_backward_channel(ws, op, x, dy, dx, da.present(), seqs, it, lane, dacc);
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
  const auto p = lcsm::detail::check_toeplitz_input(where, "x", x_t, CuSeqlens{});
  const View<T, 3>& h = history.inputs;
  lcsm::detail::check_argument(op.causal, where, "op.causal", "true (decode needs the causal form)", "false");
  lcsm::detail::check_argument(h.present(), where, "history.inputs", "a [B, n_max, C] buffer", "an absent view");
  lcsm::detail::check_output(where, "history.inputs", h);
  lcsm::detail::check_argument(h.size(0) == p.batch && h.size(2) == p.channels, where, "history.inputs",
                               lcsm::detail::concat("[B, n_max, C] with B = ", p.batch, ", C = ", p.channels),
                               lcsm::detail::dims_string<3>(h.shape()));
  const index_t n_max = h.size(1), m = p.time;
  op.check(where, p.channels, n_max);
  lcsm::detail::check_argument(history.position >= 0 && history.position + m <= n_max, where, "history.position",
                               lcsm::detail::concat("room for ", m, " more tokens: 0 <= position <= n_max - ", m, " = ",
                                                    n_max - m, " (history too short)"),
                               history.position);
  lcsm::detail::check_output(where, "y", y_t);
  lcsm::detail::check_shape(where, "y", y_t, x_t.shape(), "[B, m, C], the shape of x");
  lcsm::detail::check_disjoint(where, "y", y_t, "x", x_t);
  lcsm::detail::check_disjoint(where, "y", y_t, "history.inputs", h);
  lcsm::detail::check_disjoint(where, "y", y_t, "op.coefficients", op.coefficients);
  lcsm::detail::check_disjoint(where, "history.inputs", h, "x", x_t);
  lcsm::detail::check_disjoint(where, "history.inputs", h, "op.coefficients", op.coefficients);

  const index_t C = p.channels, position = history.position;
  constexpr index_t kChannels = 64;
  const index_t blocks = (C + kChannels - 1) / kChannels;
  // A decode of a few thousand products is not worth a thread.
  const index_t work = p.batch * C * m * (position + m);
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
