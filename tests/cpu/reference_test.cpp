// The float64 reference checks itself: two evaluation orders agree, its backward agrees with
// finite differences, and lightning's EOS mapping agrees with lightning's own quadratic formula.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "lcsm/lcsm.hpp"
#include "suite/seeds.hpp"
#include "support/backend.hpp"
#include "support/compare.hpp"

using namespace lcsm;
using namespace lcsm::test;
using reference::Oscillation;

namespace {

// An EOS instance with its own storage; the log-decay is built for the given kind.
struct EosData {
  index_t B, T, H, K, V, N;
  std::vector<double> s, e, i, g, m0;
  Offsets cu;
  bool varlen, with_state;
  Oscillation kind;

  EosData(index_t B_, index_t T_, index_t H_, index_t K_, index_t V_, Oscillation kind_, bool state,
          std::vector<index_t> lengths, std::uint64_t seed)
      : B(B_), T(T_), H(H_), K(K_), V(V_), varlen(!lengths.empty()), with_state(state), kind(kind_) {
    std::mt19937_64 rng(seed);
    if (varlen) {
      cu = Offsets::from_lengths(lengths, false);
      B = 1;
      T = cu.total();
    }
    N = varlen ? cu.count() : B;
    s = normal_values(rng, B * T * H * K, Dtype::f64);
    e = normal_values(rng, B * T * H * K, Dtype::f64);
    i = normal_values(rng, B * T * H * V, Dtype::f64);
    m0 = normal_values(rng, N * H * K * V, Dtype::f64);
    std::uniform_real_distribution<double> u(-1.5, -0.01);
    const index_t gsize = kind == Oscillation::head ? H : kind == Oscillation::token ? B * T * H : B * T * H * K;
    g.resize(kind == Oscillation::none ? 0 : gsize);
    for (auto& x : g) x = u(rng);
  }
  reference::Eos eos() const {
    reference::Eos x;
    x.shrink = lcsm::view(s.data(), {B, T, H, K});
    x.expand = lcsm::view(e.data(), {B, T, H, K});
    x.input = lcsm::view(i.data(), {B, T, H, V});
    if (kind == Oscillation::head) x.log_decay = reference::broadcast_head(g.data(), B, T, H, K);
    if (kind == Oscillation::token) x.log_decay = reference::broadcast_token(g.data(), B, T, H, K);
    if (kind == Oscillation::token_key) x.log_decay = lcsm::view(g.data(), {B, T, H, K});
    if (with_state) x.initial_state = lcsm::view(m0.data(), {N, H, K, V});
    if (varlen) x.cu_seqlens = cu.view();
    return x;
  }
  // A scalar loss: <wy, y> + <ws, final_state>.
  double loss(const std::vector<double>& wy, const std::vector<double>& ws) const {
    std::vector<double> y(B * T * H * V), sT(N * H * K * V);
    reference::recurrent(eos(), lcsm::view(y.data(), {B, T, H, V}), lcsm::view(sT.data(), {N, H, K, V}));
    double l = 0;
    for (std::size_t j = 0; j < y.size(); ++j) l += wy[j] * y[j];
    for (std::size_t j = 0; j < sT.size(); ++j) l += ws[j] * sT[j];
    return l;
  }
};

const Oscillation kinds[] = {Oscillation::none, Oscillation::head, Oscillation::token, Oscillation::token_key};
const char* kind_name(Oscillation k) {
  return k == Oscillation::none    ? "none"
         : k == Oscillation::head  ? "head"
         : k == Oscillation::token ? "token"
                                   : "token_key";
}

}  // namespace

TEST_CASE("reference: recurrent and parallel orders agree", "[reference]") {
  for (Oscillation kind : kinds)
    for (bool state : {false, true})
      for (bool varlen : {false, true}) {
        const std::uint64_t seed = fresh_seed();
        INFO(kind_name(kind) << " state=" << state << " varlen=" << varlen << " seed=" << seed);
        const EosData d(2, 37, 2, 5, 3, kind, state,
                        varlen ? std::vector<index_t>{1, 20, 0, 16} : std::vector<index_t>{}, seed);
        std::vector<double> y1(d.B * d.T * d.H * d.V, NAN), y2 = y1, s1(d.N * d.H * d.K * d.V, NAN), s2 = s1;
        reference::recurrent(d.eos(), lcsm::view(y1.data(), {d.B, d.T, d.H, d.V}),
                             lcsm::view(s1.data(), {d.N, d.H, d.K, d.V}));
        reference::parallel(d.eos(), lcsm::view(y2.data(), {d.B, d.T, d.H, d.V}),
                            lcsm::view(s2.data(), {d.N, d.H, d.K, d.V}));
        const Verdict vy = judge(y1, y2, {1e-13, 1e-12});
        const Verdict vs = judge(s1, s2, {1e-13, 1e-12});
        INFO("y: " << vy.str() << " | state: " << vs.str());
        CHECK(vy.ok);
        CHECK(vs.ok);
      }
}

TEST_CASE("reference: backward agrees with finite differences", "[reference][backward]") {
  for (Oscillation kind : kinds)
    for (bool varlen : {false, true}) {
      const std::uint64_t seed = fresh_seed();
      INFO(kind_name(kind) << " varlen=" << varlen << " seed=" << seed);
      EosData d(2, 6, 2, 3, 2, kind, true, varlen ? std::vector<index_t>{3, 0, 5} : std::vector<index_t>{}, seed);
      std::mt19937_64 rng(seed + 1);
      const auto wy = normal_values(rng, d.B * d.T * d.H * d.V, Dtype::f64);
      const auto ws = normal_values(rng, d.N * d.H * d.K * d.V, Dtype::f64);
      std::vector<double> ds(d.s.size()), de(d.e.size()), di(d.i.size()), dg(d.B * d.T * d.H * d.K), dm0(d.m0.size());
      reference::EosGrads grads;
      grads.d_shrink = lcsm::view(ds.data(), {d.B, d.T, d.H, d.K});
      grads.d_expand = lcsm::view(de.data(), {d.B, d.T, d.H, d.K});
      grads.d_input = lcsm::view(di.data(), {d.B, d.T, d.H, d.V});
      grads.d_log_decay = lcsm::view(dg.data(), {d.B, d.T, d.H, d.K});
      grads.d_initial_state = lcsm::view(dm0.data(), {d.N, d.H, d.K, d.V});
      reference::backward(d.eos(), lcsm::view(wy.data(), {d.B, d.T, d.H, d.V}),
                          lcsm::view(ws.data(), {d.N, d.H, d.K, d.V}), grads);
      const auto dg_reduced = reference::reduce_log_decay_grad(
          lcsm::view(static_cast<const double*>(dg.data()), {d.B, d.T, d.H, d.K}), kind);
      // Central differences, step 1e-5: error O(h^2) ~ 1e-10 relative.
      auto numeric = [&](std::vector<double>& x) {
        std::vector<double> out(x.size());
        for (std::size_t j = 0; j < x.size(); ++j) {
          const double keep = x[j], h = 1e-5;
          x[j] = keep + h;
          const double up = d.loss(wy, ws);
          x[j] = keep - h;
          const double down = d.loss(wy, ws);
          x[j] = keep;
          out[j] = (up - down) / (2 * h);
        }
        return out;
      };
      const struct {
        const char* what;
        std::vector<double>* x;
        const std::vector<double>* analytic;
      } checks[] = {{"d_shrink", &d.s, &ds},
                    {"d_expand", &d.e, &de},
                    {"d_input", &d.i, &di},
                    {"d_initial_state", &d.m0, &dm0},
                    {"d_log_decay", &d.g, &dg_reduced}};
      for (const auto& c : checks) {
        if (c.x->empty()) continue;
        const Verdict v = judge(*c.analytic, numeric(*c.x), {1e-7, 1e-6});
        INFO(c.what << ": " << v.str());
        CHECK(v.ok);
      }
    }
}

TEST_CASE("reference: lightning's EOS mapping equals its quadratic formula", "[reference][lightning]") {
  const index_t B = 2, T = 40, H = 3, K = 5, V = 4;
  const std::uint64_t seed = fresh_seed();
  INFO("seed=" << seed);
  std::mt19937_64 rng(seed);
  const auto q = normal_values(rng, B * T * H * K, Dtype::f64), k = normal_values(rng, B * T * H * K, Dtype::f64);
  const auto v = normal_values(rng, B * T * H * V, Dtype::f64), s0 = normal_values(rng, B * H * K * V, Dtype::f64);
  LightningAttention op;
  op.log_decay = {-0.3, -0.01, 0.0};
  op.scale = 0.7;
  std::vector<double> o(B * T * H * V);
  reference::lightning_forward(op, lcsm::view(q.data(), {B, T, H, K}), lcsm::view(k.data(), {B, T, H, K}),
                               lcsm::view(v.data(), {B, T, H, V}), lcsm::view(o.data(), {B, T, H, V}),
                               lcsm::view(s0.data(), {B, H, K, V}));
  // o_t = scale (sum_{j<=t} lambda^(t-j) (q_t . k_j) v_j + lambda^t S0^T q_t), t from 1.
  std::vector<double> direct(o.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t t = 0; t < T; ++t)
        for (index_t c = 0; c < V; ++c) {
          double acc = 0;
          for (index_t j = 0; j <= t; ++j) {
            double qk = 0;
            for (index_t d = 0; d < K; ++d) qk += q[((b * T + t) * H + h) * K + d] * k[((b * T + j) * H + h) * K + d];
            acc +=
                std::pow(std::exp(op.log_decay[h]), static_cast<double>(t - j)) * qk * v[((b * T + j) * H + h) * V + c];
          }
          for (index_t d = 0; d < K; ++d)
            acc += std::pow(std::exp(op.log_decay[h]), static_cast<double>(t + 1)) * q[((b * T + t) * H + h) * K + d] *
                   s0[((b * H + h) * K + d) * V + c];
          direct[((b * T + t) * H + h) * V + c] = 0.7 * acc;
        }
  const Verdict vd = judge(o, direct, {1e-13, 1e-12});
  INFO(vd.str());
  CHECK(vd.ok);
}

TEST_CASE("decay helpers build the published decays", "[decay]") {
  const auto a8 = decay::alibi(8);
  for (int h = 0; h < 8; ++h) CHECK(a8[h] == Approx(-std::exp2(-(h + 1.0))));
  // Non-power of two (ALiBi's rule): the 4-head slopes, then every other 8-head slope.
  const auto s6 = decay::alibi_slopes(6);
  const std::vector<double> want6{std::exp2(-2.0), std::exp2(-4.0), std::exp2(-6.0),
                                  std::exp2(-8.0), std::exp2(-1.0), std::exp2(-3.0)};
  for (int h = 0; h < 6; ++h) CHECK(s6[h] == Approx(want6[h]));
  const auto m = decay::minimax(8, 3, 4);  // factor 1 - 3/3 + 1e-5
  for (int h = 0; h < 8; ++h) CHECK(m[h] == Approx(-std::exp2(-(h + 1.0)) * 1e-5));
  const auto m0 = decay::minimax(8, 0, 80);
  for (int h = 0; h < 8; ++h) CHECK(m0[h] == Approx(-std::exp2(-(h + 1.0)) * (1 + 1e-5)));
  const auto r = decay::retnet(4);
  for (int h = 0; h < 4; ++h) CHECK(std::exp(r[h]) == Approx(1 - std::exp2(-5.0 - h)));
  CHECK_THROWS_WITH(decay::minimax(8, 0, 1), Catch::Contains("num_layers") && Catch::Contains("got 1"));
  CHECK_THROWS_WITH(decay::minimax(8, 5, 4), Catch::Contains("layer") && Catch::Contains("got 5"));
  CHECK_THROWS_WITH(decay::alibi(0), Catch::Contains("heads >= 1"));
}
