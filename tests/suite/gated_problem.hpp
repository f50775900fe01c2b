// A gated-recurrence test problem: a case description, random inputs and gates rounded to the dtype
// under test, and the float64 reference of the same rounded values.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lcsm/core/sequences.hpp"
#include "lcsm/reference/gated.hpp"
#include "support/compare.hpp"
#include "support/gated_backend.hpp"

namespace lcsm::test {

// none: g = 0; weak: g in [-2e-3, 0] (cancellation-prone: the state sums ~1000 tokens); strong:
// g = -20 per token (e^{-G} would overflow anything); mixed: g in [-1, 0] with one token in eight
// at -20, so that weak gates follow strong ones inside a block; faint: constant in time, per key from
// -1e-6 (key 0) to -1e-4 (key K - 1) on a log scale (the scalar gate: -1e-6), so that a decay factor
// rounded the same way in every block would show over 64K tokens; floor: g in [-1, 0] with one token
// in seven at -1000, the most negative gate an operator takes (lcsm::decay::min_log).
enum class GateStrength { none, weak, strong, mixed, faint, floor, sparse };

inline const char* name(GateStrength g) {
  switch (g) {
    case GateStrength::none: return "none";
    case GateStrength::weak: return "weak";
    case GateStrength::strong: return "strong";
    case GateStrength::mixed: return "mixed";
    case GateStrength::faint: return "faint";
    case GateStrength::floor: return "floor";
    case GateStrength::sparse: return "sparse";
  }
  return "?";
}

struct GatedCase {
  GateKind kind = GateKind::scalar;
  index_t B = 1, T = 64, H = 2, K = 32, V = 32;
  GateStrength gate = GateStrength::mixed;
  bool with_state = false;
  std::vector<index_t> varlen;  // lengths of packed sequences (then B = 1, T = their sum)
  bool strided = false;         // q, k, v, o and the gate in [B, H, T, D] memory
  index_t chunk = 64, sub_chunk = 16;
  bool offsets64 = false;
  std::optional<double> scale;  // op.scale (unset: 1/sqrt(K))

  std::string str() const {
    std::ostringstream s;
    s << name(kind) << " gate B=" << B << " T=" << T << " H=" << H << " K=" << K << " V=" << V << " gate=" << name(gate)
      << " state=" << with_state << " strided=" << strided << " chunk=" << chunk;
    if (kind == GateKind::vector) s << " sub_chunk=" << sub_chunk;
    if (!varlen.empty()) {
      s << " varlen={";
      for (std::size_t i = 0; i < varlen.size(); ++i) s << (i ? "," : "") << varlen[i];
      s << "}" << (offsets64 ? " int64" : " int32");
    }
    return s.str();
  }
  index_t sequences() const { return varlen.empty() ? B : static_cast<index_t>(varlen.size()); }
  index_t gate_width() const { return kind == GateKind::scalar ? 1 : K; }
};

inline GatedCase gated_case(GateKind kind, index_t B, index_t T, index_t H, index_t K, index_t V, GateStrength g,
                            bool state = false) {
  GatedCase c;
  c.kind = kind;
  c.B = B;
  c.T = T;
  c.H = H;
  c.K = K;
  c.V = V;
  c.gate = g;
  c.with_state = state;
  return c;
}

inline GatedCase gated_varlen_case(GateKind kind, std::vector<index_t> lengths, index_t H, index_t K, index_t V,
                                   GateStrength g, bool state, bool offsets64 = false) {
  GatedCase c = gated_case(kind, 1, 0, H, K, V, g, state);
  for (index_t l : lengths) c.T += l;
  c.varlen = std::move(lengths);
  c.offsets64 = offsets64;
  return c;
}

// Gate values in logical [B, T, H, W] order (W = 1: scalar gate, K: vector gate; the last index
// runs over the W keys). mixed: each token of a head is strong (-20) with probability 1/8 (scalar)
// or 1/32 (vector: all its keys, so that runs of gentle tokens, which a tensor-core backend may
// treat differently from steep ones, fill about a third of 32-token chunks), else uniform in
// [-1, 0]. faint: -1e-6 (scalar), -1e-6 .. -1e-4 across the keys (vector). floor: -1000 with
// probability 1/7, else uniform in [-1, 0]. sparse: uniform in [-0.2, 0] (a 64-token chunk decays
// by 2^-19 at most), and every 1009th (token, head) -20 on all its keys (so that a tensor-core
// backend's separable chunks and steep ones alternate along a sequence).
inline std::vector<double> gate_values(std::mt19937_64& rng, index_t n, GateStrength g, Dtype dtype, index_t W = 1) {
  std::vector<double> x(n, 0.0);
  std::uniform_real_distribution<double> weak(-2e-3, 0.0), unit(-1.0, 0.0);
  std::uniform_int_distribution<int> pick(0, W > 1 ? 31 : 7), seventh(0, 6);
  bool strong_token = false;
  for (index_t i = 0; i < n; ++i) {
    double& y = x[static_cast<std::size_t>(i)];
    if (i % W == 0) strong_token = pick(rng) == 0;
    switch (g) {
      case GateStrength::none: y = 0; break;
      case GateStrength::weak: y = weak(rng); break;
      case GateStrength::strong: y = -20.0; break;
      case GateStrength::mixed: y = strong_token ? -20.0 : unit(rng); break;
      case GateStrength::faint:
        y = W == 1 ? -1e-6 : -1e-6 * std::pow(100.0, static_cast<double>(i % W) / static_cast<double>(W - 1));
        break;
      case GateStrength::floor: y = seventh(rng) == 0 ? -1000.0 : unit(rng); break;
      case GateStrength::sparse: y = (i / W) % 1009 == 500 ? -20.0 : 0.2 * unit(rng); break;
    }
    y = round_to(dtype, y);
  }
  return x;
}

struct GatedProblemData {
  GatedCase c;
  Dtype dtype;
  GatedSpec spec;
  Tensor q, k, v, s0, gate;
  std::vector<double> qd, kd, vd, s0d, gd;
  Offsets cu;

  GatedProblemData(const GatedCase& cs, Dtype dt, std::uint64_t seed) : c(cs), dtype(dt) {
    std::mt19937_64 rng(seed);
    spec.kind = c.kind;
    spec.chunk = c.chunk;
    spec.sub_chunk = c.sub_chunk;
    spec.scale = c.scale;
    const Shape<4> qs{c.B, c.T, c.H, c.K}, vs{c.B, c.T, c.H, c.V}, gs{c.B, c.T, c.H, c.gate_width()};
    auto make = [&](Dtype d, const Shape<4>& s) { return c.strided ? Tensor::transposed_layout(d, s) : Tensor(d, s); };
    q = make(dt, qs);
    k = make(dt, qs);
    v = make(dt, vs);
    gate = make(state_dtype(dt), gs);
    qd = normal_values(rng, q.numel(), dt);
    kd = normal_values(rng, k.numel(), dt);
    vd = normal_values(rng, v.numel(), dt);
    gd = gate_values(rng, gate.numel(), c.gate, state_dtype(dt), c.gate_width());
    q.assign(qd);
    k.assign(kd);
    v.assign(vd);
    gate.assign(gd);
    if (c.with_state) {
      s0 = Tensor(state_dtype(dt), {c.sequences(), c.H, c.K, c.V});
      s0d = normal_values(rng, s0.numel(), state_dtype(dt));
      s0.assign(s0d);
    }
    if (!c.varlen.empty()) cu = Offsets::from_lengths(c.varlen, c.offsets64);
  }

  Tensor output() const {
    Tensor o = c.strided ? Tensor::transposed_layout(dtype, {c.B, c.T, c.H, c.V}) : Tensor(dtype, {c.B, c.T, c.H, c.V});
    o.poison();
    return o;
  }
  Tensor key_output() const {
    Tensor o = c.strided ? Tensor::transposed_layout(dtype, {c.B, c.T, c.H, c.K}) : Tensor(dtype, {c.B, c.T, c.H, c.K});
    o.poison();
    return o;
  }
  Tensor gate_output() const {
    Tensor g(state_dtype(dtype), gate.shape(), gate.strides());
    g.poison();
    return g;
  }
  Tensor state_output() const {
    Tensor s(state_dtype(dtype), {c.sequences(), c.H, c.K, c.V});
    s.poison();
    return s;
  }
  const Tensor* initial() const { return c.with_state ? &s0 : nullptr; }
  const Offsets* offsets() const { return c.varlen.empty() ? nullptr : &cu; }
  CuSeqlens cu_view() const { return c.varlen.empty() ? CuSeqlens{} : cu.view(); }

  View<const double, 4> dview(const std::vector<double>& x, index_t D) const {
    return lcsm::view(x.data(), {c.B, c.T, c.H, D});
  }
  View<const double, 4> s0_view() const {
    return c.with_state ? lcsm::view(s0d.data(), {c.sequences(), c.H, c.K, c.V}) : View<const double, 4>{};
  }
  // f(op) with the float64 descriptor over gd.
  template <class F>
  void with_reference_op(F&& f) const {
    if (c.kind == GateKind::scalar) {
      ScalarGatedAttention<double> op;
      op.log_gate = lcsm::view(gd.data(), {c.B, c.T, c.H});
      op.scale = c.scale;
      f(op);
    } else {
      VectorGatedAttention<double> op;
      op.log_gate = lcsm::view(gd.data(), {c.B, c.T, c.H, c.K});
      op.scale = c.scale;
      f(op);
    }
  }
  enum class Order { recurrent, parallel, direct };
  // Reference output [B, T, H, V] and final state [N, H, K, V], row-major.
  void reference(std::vector<double>& o, std::vector<double>& sT, Order order = Order::recurrent) const {
    o.assign(c.B * c.T * c.H * c.V, 0.0);
    sT.assign(c.sequences() * c.H * c.K * c.V, 0.0);
    with_reference_op([&](const auto& op) {
      auto ov = lcsm::view(o.data(), {c.B, c.T, c.H, c.V});
      auto sv = lcsm::view(sT.data(), {c.sequences(), c.H, c.K, c.V});
      if (order == Order::direct) {
        reference::gated_direct(op, dview(qd, c.K), dview(kd, c.K), dview(vd, c.V), ov, s0_view(), cu_view());
        sT.clear();
      } else {
        reference::gated_forward(op, dview(qd, c.K), dview(kd, c.K), dview(vd, c.V), ov, s0_view(), sv, cu_view(),
                                 order == Order::parallel);
      }
    });
  }
};

// The magnitude of the terms that dq and dk sum: the reference backward of |q|, |k|, |v|, |dO| and
// the states' magnitudes (every product then adds, none cancels). A float dq_t can be off by many
// ulps of |dq_t| where its terms cancel, and q_t (.) dq_t, which the gate gradient sums, with it.
struct TermMagnitudes {
  std::vector<double> dq, dk, dv, ds0;
};

inline TermMagnitudes term_magnitudes(const GatedProblemData& p, const std::vector<double>& dod,
                                      const std::vector<double>& dsTd) {
  const GatedCase& c = p.c;
  const index_t N = c.sequences();
  auto magnitude = [](const std::vector<double>& x) {
    std::vector<double> m(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) m[i] = std::fabs(x[i]);
    return m;
  };
  const std::vector<double> q = magnitude(p.qd), k = magnitude(p.kd), v = magnitude(p.vd), d_o = magnitude(dod),
                            s0 = magnitude(p.s0d), dsT = magnitude(dsTd);
  TermMagnitudes m{std::vector<double>(q.size()), std::vector<double>(k.size()), std::vector<double>(v.size()),
                   std::vector<double>(N * c.H * c.K * c.V)};
  auto mut = [&](std::vector<double>& x, index_t D) { return lcsm::view(x.data(), {c.B, c.T, c.H, D}); };
  p.with_reference_op([&](const auto& op) {
    reference::gated_backward(op, p.dview(q, c.K), p.dview(k, c.K), p.dview(v, c.V), p.dview(d_o, c.V), mut(m.dq, c.K),
                              mut(m.dk, c.K), mut(m.dv, c.V),
                              c.with_state ? lcsm::view(s0.data(), {N, c.H, c.K, c.V}) : View<const double, 4>{},
                              c.with_state ? lcsm::view(dsT.data(), {N, c.H, c.K, c.V}) : View<const double, 4>{},
                              lcsm::view(m.ds0.data(), {N, c.H, c.K, c.V}), p.cu_view());
  });
  return m;
}

// The magnitude of the terms each element of d_log_gate sums (the gate's shape): dg_t = sum over
// s >= t of q_s (.) dq_s - k_s (.) dk_s, plus sum_v dS_T (.) S_T with a state; each q_s (.) dq_s
// counted as |q_s| times the magnitude of the terms inside dq_s (a float dq_s where they cancel is
// off by many ulps of itself: seen 1.7e-4 relative on a sequence's last token when only
// |q (.) dq| was counted). sT: the reference final state.
inline std::vector<double> gate_gradient_terms(const GatedProblemData& p, const TermMagnitudes& m,
                                               const std::vector<double>& dsTd, const std::vector<double>& sT) {
  const GatedCase& c = p.c;
  const index_t W = c.gate_width(), N = c.sequences();
  const Sequences seqs(c.B, c.T, p.cu_view());
  std::vector<double> terms(c.B * c.T * c.H * W, 0.0), mag(W);
  for (index_t n = 0; n < N; ++n)
    for (index_t h = 0; h < c.H; ++h) {
      std::fill(mag.begin(), mag.end(), 0.0);
      if (c.with_state)
        for (index_t a = 0; a < c.K; ++a)
          for (index_t b = 0; b < c.V; ++b) {
            const index_t i = ((n * c.H + h) * c.K + a) * c.V + b;
            mag[W == 1 ? 0 : a] += std::fabs(dsTd[i] * sT[i]);
          }
      for (index_t t = seqs[n].length - 1; t >= 0; --t) {
        const index_t tt = seqs[n].start + t, b = seqs[n].batch;
        for (index_t d = 0; d < c.K; ++d) {
          const index_t i = ((b * c.T + tt) * c.H + h) * c.K + d;
          mag[W == 1 ? 0 : d] += std::fabs(p.qd[i]) * m.dq[i] + std::fabs(p.kd[i]) * m.dk[i];
        }
        for (index_t w = 0; w < W; ++w) terms[((b * c.T + tt) * c.H + h) * W + w] = mag[w];
      }
    }
  return terms;
}

}  // namespace lcsm::test
