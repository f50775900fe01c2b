// A cosFormer test problem: a case description, random inputs rounded to the dtype under test, and
// the float64 references (EOS mapping and direct quadratic formula) of the same rounded inputs.
#pragma once

#include <cmath>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lcsm/reference/cosformer.hpp"
#include "support/backend.hpp"
#include "support/compare.hpp"
#include "support/cosformer_backend.hpp"

namespace lcsm::test {

using CosMap = CosFormerAttention::FeatureMap;

struct CosformerCase {
  index_t B = 1, T = 64, H = 2, K = 32, V = 32;
  bool causal = true;
  CosMap map = CosMap::relu;
  std::optional<index_t> length;   // M; unset: each sequence's own end
  std::vector<index_t> positions;  // first positions per sequence; empty: absent (0)
  bool with_state = false;
  std::vector<index_t> varlen;  // lengths of packed sequences (then B = 1, T = their sum)
  bool strided = false;         // q, k, v, o in [B, H, T, D] memory
  index_t chunk = 64;
  bool offsets64 = false;
  double eps = 1e-6;  // op.eps: the denominator's clamp

  std::string str() const {
    std::ostringstream s;
    s << "B=" << B << " T=" << T << " H=" << H << " K=" << K << " V=" << V << (causal ? " causal" : " non-causal")
      << (map == CosMap::relu ? " relu" : " 1+elu") << " M=" << (length ? std::to_string(*length) : "default")
      << " state=" << with_state << " strided=" << strided << " chunk=" << chunk << " eps=" << eps;
    if (!positions.empty()) {
      s << " positions={";
      for (std::size_t i = 0; i < positions.size(); ++i) s << (i ? "," : "") << positions[i];
      s << "}";
    }
    if (!varlen.empty()) {
      s << " varlen={";
      for (std::size_t i = 0; i < varlen.size(); ++i) s << (i ? "," : "") << varlen[i];
      s << "}" << (offsets64 ? " int64" : " int32");
    }
    return s.str();
  }
  index_t sequences() const { return varlen.empty() ? B : static_cast<index_t>(varlen.size()); }
};

inline CosformerCase cos_case(index_t B, index_t T, index_t H, index_t K, index_t V, bool causal = true,
                              CosMap map = CosMap::relu, bool state = false) {
  CosformerCase c;
  c.B = B;
  c.T = T;
  c.H = H;
  c.K = K;
  c.V = V;
  c.causal = causal;
  c.map = map;
  c.with_state = state;
  return c;
}

inline CosformerCase cos_varlen_case(std::vector<index_t> lengths, index_t H, index_t K, index_t V, bool causal,
                                     bool state, bool offsets64 = false) {
  CosformerCase c = cos_case(1, 0, H, K, V, causal, CosMap::relu, state);
  for (index_t l : lengths) c.T += l;
  c.varlen = std::move(lengths);
  c.offsets64 = offsets64;
  return c;
}

// Random inputs for one case and dtype. The initial state is a plausible one: random numerator
// columns, and a denominator column of positive sums (as phi >= 0 and the angles lie in [0, pi/2)
// make it), so that the denominators stay away from the clamp.
struct CosformerProblemData {
  CosformerCase c;
  Dtype dtype;
  CosFormerAttention op;
  Tensor q, k, v, s0;
  std::vector<double> qd, kd, vd, s0d;
  std::vector<index_t> positions;
  Offsets cu;

  CosformerProblemData(const CosformerCase& cs, Dtype dt, std::uint64_t seed)
      : c(cs), dtype(dt), positions(cs.positions) {
    std::mt19937_64 rng(seed);
    op.feature_map = c.map;
    op.causal = c.causal;
    op.length = c.length;
    op.chunk = c.chunk;
    op.eps = c.eps;
    if (!positions.empty()) op.positions = lcsm::view(static_cast<const index_t*>(positions.data()), {c.sequences()});
    const Shape<4> qs{c.B, c.T, c.H, c.K}, vs{c.B, c.T, c.H, c.V};
    q = c.strided ? Tensor::transposed_layout(dt, qs) : Tensor(dt, qs);
    k = c.strided ? Tensor::transposed_layout(dt, qs) : Tensor(dt, qs);
    v = c.strided ? Tensor::transposed_layout(dt, vs) : Tensor(dt, vs);
    qd = normal_values(rng, q.numel(), dt);
    kd = normal_values(rng, k.numel(), dt);
    vd = normal_values(rng, v.numel(), dt);
    q.assign(qd);
    k.assign(kd);
    v.assign(vd);
    if (c.with_state) {
      s0 = Tensor(state_dtype(dt), state_shape());
      s0d = normal_values(rng, s0.numel(), state_dtype(dt));
      for (std::size_t i = c.V; i < s0d.size(); i += c.V + 1)
        s0d[i] = round_to(state_dtype(dt), 0.5 + std::fabs(s0d[i]) * c.K);
      s0.assign(s0d);
    }
    if (!c.varlen.empty()) cu = Offsets::from_lengths(c.varlen, c.offsets64);
  }
  CosformerProblemData(const CosformerProblemData&) = delete;
  CosformerProblemData& operator=(const CosformerProblemData&) = delete;

  Shape<4> state_shape() const { return {c.sequences(), c.H, 2 * c.K, c.V + 1}; }
  Tensor output() const {
    Tensor o = c.strided ? Tensor::transposed_layout(dtype, {c.B, c.T, c.H, c.V}) : Tensor(dtype, {c.B, c.T, c.H, c.V});
    o.poison();
    return o;
  }
  Tensor state_output() const {
    Tensor s(state_dtype(dtype), state_shape());
    s.poison();
    return s;
  }
  const Tensor* initial() const { return c.with_state ? &s0 : nullptr; }
  const Offsets* offsets() const { return c.varlen.empty() ? nullptr : &cu; }
  CuSeqlens cu_view() const { return c.varlen.empty() ? CuSeqlens{} : cu.view(); }
  View<const double, 4> dview(const std::vector<double>& x, index_t D) const {
    return lcsm::view(x.data(), {c.B, c.T, c.H, D});
  }
  View<const double, 4> s0view() const {
    return c.with_state ? View<const double, 4>(s0d.data(), state_shape(), contiguous_strides<4>(state_shape()))
                        : View<const double, 4>{};
  }
  // Through the EOS reference: output [B, T, H, V] and final state [N, H, 2K, V + 1], row-major.
  void reference(std::vector<double>& o, std::vector<double>& sT) const {
    o.assign(c.B * c.T * c.H * c.V, 0.0);
    sT.assign(c.sequences() * c.H * 2 * c.K * (c.V + 1), 0.0);
    reference::cosformer_forward(
        op, dview(qd, c.K), dview(kd, c.K), dview(vd, c.V), lcsm::view(o.data(), {c.B, c.T, c.H, c.V}), s0view(),
        View<double, 4>(sT.data(), state_shape(), contiguous_strides<4>(state_shape())), cu_view());
  }
  // The direct quadratic formula (output only; O(T^2) per head).
  std::vector<double> direct() const {
    std::vector<double> o(c.B * c.T * c.H * c.V, 0.0);
    reference::cosformer_direct(op, dview(qd, c.K), dview(kd, c.K), dview(vd, c.V),
                                lcsm::view(o.data(), {c.B, c.T, c.H, c.V}), s0view(), cu_view());
    return o;
  }
};

}  // namespace lcsm::test
