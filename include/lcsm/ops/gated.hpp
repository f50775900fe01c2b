// Decayed linear recurrences with per-token gates: a scalar gate per token and head (Mamba-2, simple
// GLA; fla's chunk_simple_gla with g) and a vector gate per token, head and key (GLA, HGRN2; fla's
// chunk_gla).
//
//   S_0 = initial state,  S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,  o_t = scale * S_t^T q_t,
//
// g_t <= 0 (natural log): one value per (b, t, h) broadcast over the K rows for the scalar gate, a
// K-vector for the vector gate. As an EOS instance: shrink s = scale * q, expand e = k, input i = v,
// oscillation `token` (scalar) or `token_key` (vector). A gate constant in time is lightning
// attention's per-head decay: use LightningAttention for it (it needs no gate tensor).
#pragma once

#include <cmath>
#include <limits>
#include <optional>

#include "lcsm/core/decay.hpp"
#include "lcsm/core/dtype.hpp"
#include "lcsm/core/error.hpp"
#include "lcsm/core/precision.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"

namespace lcsm {
namespace detail {

// The log-gate view: shape [B, T, H] or [B, T, H, K], valid memory, every value in
// [decay::min_log, 0] = [-1000, 0] (the first offending index and value are reported; NaN fails). One pass over the
// rows of the last dimension; the per-element test is a branch-free reduction, so the check costs a read of the gate.
template <class G, int Rank>
void check_log_gate(const char* where, const View<const G, Rank>& g, const Shape<Rank>& expected, const char* layout) {
  check_memory(where, "op.log_gate", g);
  check_shape(where, "op.log_gate", g, expected, layout);
  if (g.numel() == 0) return;
  const index_t n = g.size(Rank - 1), st = g.stride(Rank - 1);
  const G lowest = static_cast<G>(decay::min_log);
  Shape<Rank> idx{};
  for (;;) {
    index_t off = 0;
    for (int d = 0; d < Rank - 1; ++d) off += idx[d] * g.stride(d);
    const G* row = g.data() + off;
    bool bad = false;
    if (st == 1)
      for (index_t e = 0; e < n; ++e) bad |= !(row[e] >= lowest && row[e] <= G(0));
    else
      for (index_t e = 0; e < n; ++e) bad |= !(row[e * st] >= lowest && row[e * st] <= G(0));
    if (bad)
      for (index_t e = 0; e < n; ++e) {
        const G x = row[e * st];
        if (!(x >= lowest && x <= G(0))) {
          idx[Rank - 1] = e;
          throw_argument(where, "op.log_gate",
                         "-1000 <= g <= 0 (gate = exp(g) in [0, 1]; exp(-1000) is already 0: clamp stronger gates "
                         "to lcsm::decay::min_log)",
                         concat("g", dims_string<Rank>(idx), " = ", x));
        }
      }
    int d = Rank - 2;  // the next row: an odometer over the leading dimensions
    for (; d >= 0; --d) {
      if (++idx[d] < g.size(d)) break;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace detail

// Common fields of the two gated descriptors.
struct GatedOptions {
  // Multiplies q; 1/sqrt(K) when unset.
  std::optional<double> scale;
  // Tokens per block of the chunked algorithm (CPU backend; the CUDA kernels pick their own tile).
  index_t chunk = 64;
  // Tensor-core backends: exact (default) or fast rounding of the products (core/precision.hpp).
  using Precision = lcsm::Precision;
  Precision precision = Precision::exact;

  double scale_for(index_t key_dim) const { return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(key_dim)); }
  void check_options(const char* where) const {
    if (scale && !std::isfinite(*scale)) detail::throw_argument(where, "op.scale", "a finite scale", *scale);
    detail::check_argument(chunk >= 1 && chunk <= 1024, where, "op.chunk", "1 <= chunk <= 1024", chunk);
  }
};

// Scalar gate: log_gate [B, T, H] (for step(): [B, n, H], the n decode tokens), in the state type
// (float for float inputs, double for double), as fla keeps gates in fp32.
template <class T>
struct ScalarGatedAttention : GatedOptions {
  using Gate = state_t<T>;
  View<const Gate, 3> log_gate;

  // Throws lcsm::Error for a gate that does not fit [B, T, H] or holds a value that is not finite and <= 0.
  void check(const char* where, index_t batch, index_t time, index_t heads, index_t key_dim) const {
    check_layout(where, batch, time, heads, key_dim);
    detail::check_log_gate<Gate, 3>(where, log_gate, {batch, time, heads}, "[B, T, H]");
  }
  // The same without reading the gate's values: for a gate in device memory.
  void check_layout(const char* where, index_t batch, index_t time, index_t heads, index_t /*key_dim*/) const {
    check_options(where);
    detail::check_memory(where, "op.log_gate", log_gate);
    detail::check_shape(where, "op.log_gate", log_gate, {batch, time, heads}, "[B, T, H]");
  }
};

// Vector gate: log_gate [B, T, H, K] (for step(): [B, n, H, K]). The intra-block scores use
// sub-blocks of `sub_chunk` tokens (see docs/model.md): every exponential has a non-positive argument.
template <class T>
struct VectorGatedAttention : GatedOptions {
  using Gate = state_t<T>;
  View<const Gate, 4> log_gate;
  index_t sub_chunk = 16;

  void check(const char* where, index_t batch, index_t time, index_t heads, index_t key_dim) const {
    check_layout(where, batch, time, heads, key_dim);
    detail::check_log_gate<Gate, 4>(where, log_gate, {batch, time, heads, key_dim}, "[B, T, H, K]");
  }
  // The same without reading the gate's values: for a gate in device memory.
  void check_layout(const char* where, index_t batch, index_t time, index_t heads, index_t key_dim) const {
    check_options(where);
    detail::check_argument(sub_chunk >= 1 && sub_chunk <= chunk, where, "op.sub_chunk",
                           detail::concat("1 <= sub_chunk <= chunk = ", chunk), sub_chunk);
    detail::check_memory(where, "op.log_gate", log_gate);
    detail::check_shape(where, "op.log_gate", log_gate, {batch, time, heads, key_dim}, "[B, T, H, K]");
  }
};

}  // namespace lcsm
