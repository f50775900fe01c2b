// Toeplitz long convolution (TNN): per channel c, a Toeplitz matrix of coefficients a[c, r] over
// the relative position r = t - s,
//
//   y[b, t, c] = sum_s a[c, t - s] x[b, s, c],   causal: 0 <= r < n;  bidirectional: -n < r < n.
//
// As an EOS instance (channels as heads): e_t = one-hot(t) (K = n), oscillation none, input
// i_t = x_t (V = 1), shrink s_t[j] = a[t - j]. The causal form is exactly that EOS; the
// bidirectional form adds the same on the reversed sequence with a[-r] and removes the r = 0 term
// counted twice (reference/toeplitz.hpp). The memory grows with n, so there is no O(1) decode
// state: step() keeps the past inputs (ToeplitzHistory) and costs O(t) per token and channel.
#pragma once

#include <algorithm>
#include <cmath>

#include "lcsm/core/error.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {

template <class T>
struct ToeplitzConvolution {
  // [C, n] for the causal form (a_0 .. a_{n-1}), [C, 2n - 1] for the bidirectional form (a_r at
  // index r + n - 1, r = -(n-1) .. n-1). Any strides. With cu_seqlens, n is the longest sequence
  // the coefficients cover (>= every sequence length); a sequence of length l uses a_{-(l-1)..l-1}.
  View<const T, 2> coefficients;
  bool causal = true;

  // fft: O(n log n) per channel; direct: O(n^2) per channel, faster for short n; automatic picks
  // direct for n <= direct_max_length (causal) or n <= direct_max_length / 2 (bidirectional, twice
  // the direct work): the switch-over measured on the 2-core machine of docs/performance.md
  // (direct wins at n = 48, the FFT at n = 64 causal; bidirectional between 16 and 32).
  enum class Path { automatic, fft, direct };
  Path path = Path::automatic;
  index_t direct_max_length = 48;

  index_t channels() const { return coefficients.size(0); }
  // The n the coefficients are for: their length (causal) or (length + 1) / 2 (bidirectional).
  index_t length() const { return causal ? coefficients.size(1) : (coefficients.size(1) + 1) / 2; }
  // Index of a_0 in a coefficient row.
  index_t center() const { return causal ? 0 : length() - 1; }
  bool use_fft(index_t n) const {
    return path == Path::fft || (path == Path::automatic && n > (causal ? direct_max_length : direct_max_length / 2));
  }

  // n (causal) or 2n - 1 coefficients; the largest index_t where 2n - 1 would overflow (check rejects n there).
  static index_t coefficient_count(bool causal, index_t n) {
    if (causal) return n;
    return n <= 0 ? 0 : n > detail::kIndexMax / 2 ? detail::kIndexMax : 2 * n - 1;
  }

  // Throws lcsm::Error unless the coefficients fit C channels and sequences of `n` tokens
  // (`exact`: length n, else at least n).
  void check(const char* where, index_t C, index_t n, bool exact = true) const {
    detail::check_memory(where, "op.coefficients", coefficients);
    if (!causal && n > detail::kIndexMax / 2)
      detail::throw_argument(where, "x", "n <= 2^62 tokens (the bidirectional form has 2n - 1 coefficients)",
                             detail::concat("n = ", n));
    detail::check_argument(coefficients.size(0) == C, where, "op.coefficients",
                           detail::concat("[C, ...] with C = ", C, " channels (the last dimension of x)"),
                           detail::concat("shape ", detail::dims_string<2>(coefficients.shape())));
    const index_t got = coefficients.size(1);
    const char* form = causal ? "causal: n" : "bidirectional: 2n - 1";
    if (exact) {
      detail::check_argument(
          got == coefficient_count(causal, n), where, "op.coefficients",
          detail::concat(coefficient_count(causal, n), " coefficients per channel (", form, " for n = ", n, ")"),
          detail::concat(got, " (shape ", detail::dims_string<2>(coefficients.shape()), ")"));
    } else {
      const bool ok = got >= coefficient_count(causal, n) && (causal || got % 2 == 1);
      detail::check_argument(ok, where, "op.coefficients",
                             detail::concat("at least ", coefficient_count(causal, n), " coefficients per channel (",
                                            form, " for the longest sequence, n = ", n, causal ? ")" : ", odd)"),
                             detail::concat(got, " (shape ", detail::dims_string<2>(coefficients.shape()), ")"));
    }
    detail::check_argument(direct_max_length >= 0, where, "op.direct_max_length", ">= 0", direct_max_length);
  }
};

// Decode state of the causal convolution: the caller-owned inputs seen so far, [B, n_max, C], and
// how many tokens of each sequence it holds. step() writes each new token at row `position` and
// advances it. There is no O(1) state: y_t needs every past x_s (a_{t-s} differs for each s).
template <class T>
struct ToeplitzHistory {
  View<T, 3> inputs;
  index_t position = 0;
};

namespace detail {

struct ToeplitzShape {
  index_t batch, time, channels, sequences, longest;  // longest: -1 where the offsets are on a device
};

// x (an input of ops: its memory is checked there) and cu_seqlens. Offsets in device memory are not
// read (that would synchronise): their count and memory are checked, B = 1 and contiguity.
template <class T>
ToeplitzShape check_toeplitz_input(const char* where, const char* name, const View<const T, 3>& x, const CuSeqlens& cu,
                                   Operands& ops, OffsetsAt offsets = OffsetsAt::host) {
  ops.in(name, x);
  check_argument(x.size(2) >= 1, where, name, "[B, n, C] with C >= 1", dims_string<3>(x.shape()));
  if (offsets == OffsetsAt::host) {
    check_cu_seqlens(where, cu, x.size(0), x.size(1));
  } else if (cu.present()) {
    check_cu_seqlens_memory(where, cu);
    check_argument(x.size(0) == 1, where, "cu_seqlens", "a packed batch with B = 1", concat("B = ", x.size(0)));
    check_argument(cu.stride() == 1, where, "cu_seqlens", "contiguous offsets", concat("stride ", cu.stride()));
  }
  ops.in("cu_seqlens", cu);
  ToeplitzShape p{x.size(0), x.size(1), x.size(2), x.size(0), x.size(1)};
  if (cu.present()) {
    p.sequences = cu.num_sequences();
    p.longest = offsets == OffsetsAt::device ? -1 : 0;
    if (offsets == OffsetsAt::host)
      for (index_t i = 0; i < p.sequences; ++i) p.longest = std::max(p.longest, cu[i + 1] - cu[i]);
  }
  return p;
}

// The coefficients against the sequences: exactly n (or 2n - 1) for one length, at least the longest
// with cu_seqlens; with offsets on a device (longest unknown) any count, odd when bidirectional (a
// longer sequence is then the caller's error: the kernels compute its first op.length() tokens).
template <class T>
void check_toeplitz_coefficients(const char* where, const ToeplitzConvolution<T>& op, const ToeplitzShape& p,
                                 const CuSeqlens& cu) {
  if (p.longest >= 0) op.check(where, p.channels, p.longest, !cu.present());
  else op.check(where, p.channels, std::min<index_t>(p.time, 1), false);
}

// The operands every call and workspace query shares: x, cu_seqlens and the coefficients (recorded
// in ops as inputs), checked against each other.
template <class T>
ToeplitzShape check_toeplitz_operands(const char* where, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                                      const CuSeqlens& cu, Operands& ops, OffsetsAt offsets = OffsetsAt::host) {
  const ToeplitzShape p = check_toeplitz_input(where, "x", x, cu, ops, offsets);
  ops.in("op.coefficients", op.coefficients);
  check_toeplitz_coefficients(where, op, p, cu);
  return p;
}

template <class T>
ToeplitzShape check_toeplitz_forward(const char* where, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                                     const View<T, 3>& y, const CuSeqlens& cu, OffsetsAt offsets = OffsetsAt::host) {
  Operands ops(where);
  const ToeplitzShape p = check_toeplitz_operands(where, op, x, cu, ops, offsets);
  ops.out("y", y);
  check_shape(where, "y", y, x.shape(), "[B, n, C], the shape of x");
  ops.check();
  return p;
}

template <class T>
ToeplitzShape check_toeplitz_backward(const char* where, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                                      const View<const T, 3>& dy, const View<T, 3>& dx, const View<T, 2>& da,
                                      const CuSeqlens& cu, OffsetsAt offsets = OffsetsAt::host) {
  Operands ops(where);
  const ToeplitzShape p = check_toeplitz_operands(where, op, x, cu, ops, offsets);
  ops.in("dy", dy);
  check_shape(where, "dy", dy, x.shape(), "[B, n, C], the shape of x");
  ops.out("dx", dx).out("da", da);
  if (dx.present()) check_shape(where, "dx", dx, x.shape(), "[B, n, C], the shape of x");
  if (da.present()) check_shape(where, "da", da, op.coefficients.shape(), "[C, count], the shape of op.coefficients");
  ops.check();
  return p;
}

// Decode: x_t, y_t [B, m, C]; history.inputs [B, n_max, C] with room for m more tokens after
// history.position; coefficients [C, n_max] (causal).
template <class T>
ToeplitzShape check_toeplitz_step(const char* where, const ToeplitzConvolution<T>& op, const View<const T, 3>& x_t,
                                  const View<T, 3>& y_t, const ToeplitzHistory<T>& history) {
  Operands ops(where);
  const ToeplitzShape p = check_toeplitz_input(where, "x", x_t, CuSeqlens{}, ops);
  const View<T, 3>& h = history.inputs;
  check_argument(op.causal, where, "op.causal", "true (decode needs the causal form)", "false");
  check_argument(h.present(), where, "history.inputs", "a [B, n_max, C] buffer", "an absent view");
  ops.out("history.inputs", h);  // advanced in place: an output, disjoint from x, y and the coefficients
  check_argument(h.size(0) == p.batch && h.size(2) == p.channels, where, "history.inputs",
                 concat("[B, n_max, C] with B = ", p.batch, ", C = ", p.channels), dims_string<3>(h.shape()));
  const index_t n_max = h.size(1), m = p.time;
  ops.in("op.coefficients", op.coefficients);
  op.check(where, p.channels, n_max);
  // position + m <= n_max without computing position + m (a position near INT64_MAX must not wrap).
  check_argument(
      history.position >= 0 && m <= n_max && history.position <= n_max - m, where, "history.position",
      concat("room for ", m, " more tokens: 0 <= position <= n_max - ", m, " = ", n_max - m, " (history too short)"),
      history.position);
  ops.out("y", y_t);
  check_shape(where, "y", y_t, x_t.shape(), "[B, m, C], the shape of x");
  ops.check();
  return p;
}

}  // namespace detail
}  // namespace lcsm
