// A lightning-attention test problem: a case description, random inputs rounded to the dtype
// under test, and the float64 reference of the same rounded inputs.
#pragma once

#include <algorithm>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lcsm/core/decay.hpp"
#include "lcsm/reference/lightning.hpp"
#include "support/backend.hpp"
#include "support/compare.hpp"

namespace lcsm::test {

// faint: g = -1e-6 on every head (lambda^64K = 0.94: a float state summed over 64K tokens, where a
// decay factor rounded the same way in every block would show); floor: -1000 (lcsm::decay::min_log,
// the strongest decay an operator takes) on even heads, -0.1 on odd ones.
enum class DecayKind { none, weak, strong, mixed, retnet, faint, floor };

inline const char* name(DecayKind d) {
  switch (d) {
    case DecayKind::none: return "none";
    case DecayKind::weak: return "weak";
    case DecayKind::strong: return "strong";
    case DecayKind::mixed: return "mixed";
    case DecayKind::retnet: return "retnet";
    case DecayKind::faint: return "faint";
    case DecayKind::floor: return "floor";
  }
  return "?";
}

inline std::vector<double> log_decays(DecayKind kind, index_t H) {
  switch (kind) {
    case DecayKind::none: return decay::none(static_cast<int>(H));
    case DecayKind::weak: return decay::minimax(static_cast<int>(H), 1, 4);
    case DecayKind::mixed: return decay::alibi(static_cast<int>(H));
    case DecayKind::retnet: return decay::retnet(static_cast<int>(H));
    case DecayKind::faint: return std::vector<double>(static_cast<std::size_t>(H), -1e-6);
    case DecayKind::floor: {
      std::vector<double> g(H);
      for (index_t h = 0; h < H; ++h) g[h] = h % 2 == 0 ? decay::min_log : -0.1;
      return g;
    }
    case DecayKind::strong: {  // from -0.5 to -20: lambda^2 already under 1e-17 for the last head
      std::vector<double> g(H);
      for (index_t h = 0; h < H; ++h) g[h] = H == 1 ? -20.0 : -0.5 - 19.5 * static_cast<double>(h) / (H - 1);
      return g;
    }
  }
  return {};
}

struct LightningCase {
  index_t B = 1, T = 64, H = 2, K = 32, V = 32;
  DecayKind decay = DecayKind::mixed;
  bool with_state = false;
  std::vector<index_t> varlen;  // lengths of packed sequences (then B = 1, T = their sum)
  bool strided = false;         // q, k, v, o in [B, H, T, D] memory
  index_t chunk = 64;
  bool offsets64 = false;
  std::optional<double> scale;  // op.scale (unset: 1/sqrt(K))

  std::string str() const {
    std::ostringstream s;
    s << "B=" << B << " T=" << T << " H=" << H << " K=" << K << " V=" << V << " decay=" << name(decay)
      << " state=" << with_state << " strided=" << strided << " chunk=" << chunk;
    if (scale) s << " scale=" << *scale;
    if (!varlen.empty()) {
      s << " varlen={";
      for (std::size_t i = 0; i < varlen.size(); ++i) s << (i ? "," : "") << varlen[i];
      s << "}" << (offsets64 ? " int64" : " int32");
    }
    return s.str();
  }
  index_t sequences() const { return varlen.empty() ? B : static_cast<index_t>(varlen.size()); }
};

inline LightningCase varlen_case(std::vector<index_t> lengths, index_t H, index_t K, index_t V, DecayKind decay,
                                 bool with_state, bool offsets64 = false) {
  LightningCase c;
  c.B = 1;
  c.T = 0;
  for (index_t l : lengths) c.T += l;
  c.H = H;
  c.K = K;
  c.V = V;
  c.decay = decay;
  c.with_state = with_state;
  c.varlen = std::move(lengths);
  c.offsets64 = offsets64;
  return c;
}

// Random inputs for one case and dtype, and their float64 reference.
struct LightningProblemData {
  LightningCase c;
  Dtype dtype;
  LightningAttention op;
  Tensor q, k, v, s0;
  std::vector<double> qd, kd, vd, s0d;
  Offsets cu;

  LightningProblemData(const LightningCase& cs, Dtype dt, std::uint64_t seed) : c(cs), dtype(dt) {
    std::mt19937_64 rng(seed);
    op.log_decay = log_decays(c.decay, c.H);
    op.chunk = c.chunk;
    op.scale = c.scale;
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
  Tensor state_output() const {
    Tensor s(state_dtype(dtype), {c.sequences(), c.H, c.K, c.V});
    s.poison();
    return s;
  }
  const Tensor* initial() const { return c.with_state ? &s0 : nullptr; }
  const Offsets* offsets() const { return c.varlen.empty() ? nullptr : &cu; }

  View<const double, 4> dview(const std::vector<double>& x, index_t D) const {
    return lcsm::view(x.data(), {c.B, c.T, c.H, D});
  }
  // Reference output [B, T, H, V] and final state [N, H, K, V], row-major.
  void reference(std::vector<double>& o, std::vector<double>& sT) const {
    o.assign(c.B * c.T * c.H * c.V, 0.0);
    sT.assign(c.sequences() * c.H * c.K * c.V, 0.0);
    reference::lightning_forward(
        op, dview(qd, c.K), dview(kd, c.K), dview(vd, c.V), lcsm::view(o.data(), {c.B, c.T, c.H, c.V}),
        c.with_state ? lcsm::view(s0d.data(), {c.sequences(), c.H, c.K, c.V}) : View<const double, 4>{},
        lcsm::view(sT.data(), {c.sequences(), c.H, c.K, c.V}), c.varlen.empty() ? CuSeqlens{} : cu.view());
  }
};

}  // namespace lcsm::test
