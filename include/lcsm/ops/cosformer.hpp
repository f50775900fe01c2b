// cosFormer (Qin et al., ICLR 2022): linear attention with a non-negative feature map and a cos
// re-weighting of the scores, normalised by the sum of its weights.
//
//   w_ij = cos(pi (p_i - p_j) / (2M)) = cos_i cos_j + sin_i sin_j,  cos_i = cos(pi p_i / 2M), sin_i = sin(..)
//   o_i  = sum_j w_ij (phi(q_i).phi(k_j)) v_j / max(sum_j w_ij phi(q_i).phi(k_j), eps)
//
// p_i is the 0-based position of token i in its sequence (plus op.positions[n] where given), the
// sums run over j <= i (causal) or over the whole sequence, phi is ReLU or 1 + ELU, and M is the
// length constant (M >= every position + 1, so that all weights lie in (0, 1]).
//
// As an EOS instance: 2K features, shrink q'_i = [phi(q_i) cos_i, phi(q_i) sin_i], expand
// k'_j = [phi(k_j) cos_j, phi(k_j) sin_j], input [v_j, 1], oscillation none. The state is that
// instance's memory, [N, H, 2K, V + 1]: rows 0..K-1 the cos features, rows K..2K-1 the sin
// features, columns 0..V-1 the numerator's sum k'_j v_j^T, column V the denominator's sum z = k'_j.
#pragma once

#include <cmath>
#include <optional>
#include <type_traits>

#include "lcsm/core/error.hpp"
#include "lcsm/core/precision.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {

struct CosFormerAttention {
  // phi: ReLU (the paper's choice) or 1 + ELU (phi(x) = x + 1 for x > 0, exp(x) otherwise).
  enum class FeatureMap { relu, elu_plus_one };
  FeatureMap feature_map = FeatureMap::relu;
  // Causal sums over j <= i; otherwise over the whole sequence (see docs/model.md for states).
  bool causal = true;
  // M. Unset: each sequence's own end, positions[n] + its length (the paper's M = max length for
  // a single sequence). Streaming and decode need M fixed in advance: set it to the longest
  // position + 1 the sequence will reach. Every position must stay below M.
  std::optional<index_t> length;
  // The denominator is clamped: max(den, eps), as in the published code (clamp_min).
  double eps = 1e-6;
  // Tokens per block of the chunked algorithm (CPU backend).
  index_t chunk = 64;
  // Tensor-core backends: exact (default) or fast rounding of the products (core/precision.hpp).
  Precision precision = Precision::exact;
  // [N] (int64): the position of each sequence's first token. forward(): optional (absent: 0), so
  // a prefill can continue from a state; step(): required, [B], the position of the first decode
  // token. The view's memory is read during the call only.
  View<const index_t, 1> positions;

  // M for a sequence whose first token sits at `first` and that has `tokens` tokens.
  index_t length_for(index_t first, index_t tokens) const { return length ? *length : first + tokens; }
  index_t position_of(index_t sequence) const { return positions.present() ? positions(sequence) : 0; }

  // Throws lcsm::Error for a descriptor that does not fit (fields that do not depend on q, k, v).
  void check(const char* where) const {
    if (!(std::isfinite(eps) && eps > 0)) detail::throw_argument(where, "op.eps", "a finite eps > 0", eps);
    detail::check_argument(chunk >= 1 && chunk <= 1024, where, "op.chunk", "1 <= chunk <= 1024", chunk);
    if (length) detail::check_argument(*length >= 1, where, "op.length", "M >= 1", *length);
  }

  // positions (when present or `required`) is [N] with values >= 0, and every sequence n of
  // `lengths(n)` tokens fits: positions[n] + lengths(n) <= M.
  template <class Lengths>
  void check_positions(const char* where, index_t sequences, Lengths&& lengths, bool required) const {
    if (required && positions.absent())
      detail::throw_argument(where, "op.positions",
                             detail::concat("[", sequences, "] positions of the first decode token per sequence"),
                             "an absent view");
    if (positions.present()) {
      detail::check_memory(where, "op.positions", positions);
      detail::check_shape(where, "op.positions", positions, {sequences}, "[N], one position per sequence");
      for (index_t n = 0; n < sequences; ++n)
        if (positions(n) < 0)
          detail::throw_argument(where, "op.positions", "positions >= 0",
                                 detail::concat("positions[", n, "] = ", positions(n)));
    }
    for (index_t n = 0; n < sequences; ++n) {
      const index_t first = position_of(n), tokens = lengths(n);
      if (tokens == 0) continue;
      index_t end = 0;  // position + length, checked: positions near INT64_MAX must not wrap below M
      if (detail::add_overflows(first, tokens, end))
        detail::throw_argument(where, "op.positions", "position + length of every sequence within 64 bits",
                               detail::concat("positions[", n, "] = ", first, " with ", tokens, " tokens"));
      if (end > length_for(first, tokens))
        detail::throw_argument(where, "op.length", "M >= position + length of every sequence",
                               detail::concat("M = ", length_for(first, tokens), " smaller than the length: sequence ",
                                              n, " at position ", first, " with ", tokens, " tokens reaches ", end));
    }
  }
};

}  // namespace lcsm
