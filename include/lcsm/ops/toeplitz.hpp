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
  index_t batch, time, channels, sequences, longest;
};

// x (an input of ops: its memory is checked there) and cu_seqlens.
template <class T>
ToeplitzShape check_toeplitz_input(const char* where, const char* name, const View<const T, 3>& x, const CuSeqlens& cu,
                                   Operands& ops) {
  ops.in(name, x);
  check_argument(x.size(2) >= 1, where, name, "[B, n, C] with C >= 1", dims_string<3>(x.shape()));
  check_cu_seqlens(where, cu, x.size(0), x.size(1));
  ops.in("cu_seqlens", cu);
  ToeplitzShape p{x.size(0), x.size(1), x.size(2), x.size(0), x.size(1)};
  if (cu.present()) {
    p.sequences = cu.num_sequences();
    p.longest = 0;
    for (index_t i = 0; i < p.sequences; ++i) p.longest = std::max(p.longest, cu[i + 1] - cu[i]);
  }
  return p;
}

template <class T>
ToeplitzShape check_toeplitz_forward(const char* where, const ToeplitzConvolution<T>& op, const View<const T, 3>& x,
                                     const View<T, 3>& y, const CuSeqlens& cu) {
  Operands ops(where);
  const ToeplitzShape p = check_toeplitz_input(where, "x", x, cu, ops);
  ops.in("op.coefficients", op.coefficients);
  op.check(where, p.channels, p.longest, !cu.present());
  ops.out("y", y);
  check_shape(where, "y", y, x.shape(), "[B, n, C], the shape of x");
  ops.check();
  return p;
}

}  // namespace detail
}  // namespace lcsm
