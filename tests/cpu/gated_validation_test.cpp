// The gated entry points' bad-input errors (each message names the argument, the expected and the
// actual value), NaN propagation, and threads 1 vs several on the CPU.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "lcsm/lcsm.hpp"
#include "lcsm/reference/gated.hpp"

using namespace lcsm;
using Catch::Contains;

namespace {

struct GatedBuffers {
  static constexpr index_t B = 2, T = 8, H = 2, K = 4, V = 3;
  std::vector<float> q, k, v, o, s0, s1, gs, gv, dq, dk, dv, dgs, dgv;
  ScalarGatedAttention<float> sop;
  VectorGatedAttention<float> vop;
  cpu::Device dev{2};
  GatedBuffers()
      : q(B * T * H * K, 0.5f), k(q), v(B * T * H * V, 0.25f), o(v.size()), s0(B * H * K * V, 0.1f), s1(s0.size()),
        gs(B * T * H, -0.1f), gv(B * T * H * K, -0.1f), dq(q.size()), dk(q.size()), dv(v.size()), dgs(gs.size()),
        dgv(gv.size()) {
    sop.log_gate = lcsm::view(static_cast<const float*>(gs.data()), {B, T, H});
    vop.log_gate = lcsm::view(static_cast<const float*>(gv.data()), {B, T, H, K});
  }
  View<float, 4> qv() { return lcsm::view(q.data(), {B, T, H, K}); }
  View<float, 4> kv() { return lcsm::view(k.data(), {B, T, H, K}); }
  View<float, 4> vv() { return lcsm::view(v.data(), {B, T, H, V}); }
  View<float, 4> ov() { return lcsm::view(o.data(), {B, T, H, V}); }
  View<float, 4> s0v() { return lcsm::view(s0.data(), {B, H, K, V}); }
  View<float, 4> s1v() { return lcsm::view(s1.data(), {B, H, K, V}); }
  template <class Op>
  void run(const Op& op) {
    forward<float>(dev, op, qv(), kv(), vv(), ov(), {s0v(), s1v()});
  }
};

}  // namespace

TEST_CASE("gated validation: well-formed calls run", "[gated][validation]") {
  GatedBuffers b;
  CHECK_NOTHROW(b.run(b.sop));
  CHECK_NOTHROW(b.run(b.vop));
  CHECK_NOTHROW(backward<float>(b.dev, b.sop, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(b.dq.data(), {2, 8, 2, 4}),
                                lcsm::view(b.dk.data(), {2, 8, 2, 4}), lcsm::view(b.dv.data(), {2, 8, 2, 3}), {},
                                lcsm::view(b.dgs.data(), {2, 8, 2})));
}

TEST_CASE("gated validation: the gate's shape", "[gated][validation]") {
  GatedBuffers b;
  b.sop.log_gate = lcsm::view(static_cast<const float*>(b.gs.data()), {2, 7, 2});
  CHECK_THROWS_WITH(b.run(b.sop), Contains("lcsm::forward(cpu, ScalarGatedAttention)") &&
                                      Contains("argument 'op.log_gate'") &&
                                      Contains("expected shape [2, 8, 2] [B, T, H]") && Contains("got [2, 7, 2]"));
  b.vop.log_gate = lcsm::view(static_cast<const float*>(b.gv.data()), {2, 8, 2, 3});
  CHECK_THROWS_WITH(b.run(b.vop), Contains("argument 'op.log_gate'") &&
                                      Contains("expected shape [2, 8, 2, 4] [B, T, H, K]") &&
                                      Contains("got [2, 8, 2, 3]"));
  b.vop.log_gate = {};
  CHECK_THROWS_WITH(b.run(b.vop), Contains("argument 'op.log_gate'") && Contains("got [0, 0, 0, 0]"));
  b.vop.log_gate = View<const float, 4>(nullptr, {2, 8, 2, 4}, {64, 8, 4, 1});
  CHECK_THROWS_WITH(b.run(b.vop), Contains("argument 'op.log_gate'") && Contains("non-null data"));
  // Decode: the gate covers the n tokens of the step.
  GatedBuffers c;
  c.sop.log_gate = lcsm::view(static_cast<const float*>(c.gs.data()), {2, 1, 2});
  CHECK_THROWS_WITH(step<float>(c.dev, c.sop, c.qv(), c.kv(), c.vv(), c.ov(), c.s1v()),
                    Contains("lcsm::step(cpu, ScalarGatedAttention)") && Contains("argument 'op.log_gate'") &&
                        Contains("[2, 8, 2]") && Contains("got [2, 1, 2]"));
}

TEST_CASE("gated validation: gate values", "[gated][validation]") {
  GatedBuffers b;
  b.gs[(1 * 8 + 3) * 2 + 1] = 0.5f;  // g[1, 3, 1]
  CHECK_THROWS_WITH(b.run(b.sop), Contains("argument 'op.log_gate'") && Contains("-1000 <= g <= 0") &&
                                      Contains("got g[1, 3, 1] = 0.5"));
  b.gs[(1 * 8 + 3) * 2 + 1] = -0.1f;
  b.gs[5] = std::numeric_limits<float>::quiet_NaN();  // g[0, 2, 1]
  CHECK_THROWS_WITH(b.run(b.sop), Contains("op.log_gate") && Contains("g[0, 2, 1] = nan"));
  b.gs[5] = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(b.run(b.sop), Contains("op.log_gate") && Contains("g[0, 2, 1] = -inf"));
  b.gs[5] = -0.0f;  // g = 0 is no decay at all: fine
  CHECK_NOTHROW(b.run(b.sop));
  b.gv[((0 * 8 + 7) * 2 + 0) * 4 + 2] = 1e-7f;  // g[0, 7, 0, 2]
  CHECK_THROWS_WITH(b.run(b.vop), Contains("op.log_gate") && Contains("got g[0, 7, 0, 2] = 1e-07"));
  // The same checks on the other entry points.
  CHECK_THROWS_WITH(backward<float>(b.dev, b.vop, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(b.dq.data(), {2, 8, 2, 4}),
                                    lcsm::view(b.dk.data(), {2, 8, 2, 4}), lcsm::view(b.dv.data(), {2, 8, 2, 3})),
                    Contains("lcsm::backward(cpu, VectorGatedAttention)") && Contains("g[0, 7, 0, 2]"));
  GatedBuffers c;
  c.gv[3] = std::numeric_limits<float>::quiet_NaN();
  c.vop.log_gate = lcsm::view(static_cast<const float*>(c.gv.data()), {2, 8, 2, 4});
  CHECK_THROWS_WITH(step<float>(c.dev, c.vop, c.qv(), c.kv(), c.vv(), c.ov(), c.s1v()),
                    Contains("lcsm::step(cpu, VectorGatedAttention)") && Contains("g[0, 0, 0, 3] = nan"));
}

TEST_CASE("gated validation: options", "[gated][validation]") {
  GatedBuffers b;
  b.vop.chunk = 0;
  CHECK_THROWS_WITH(b.run(b.vop), Contains("op.chunk") && Contains("got 0"));
  b.vop.chunk = 16;
  b.vop.sub_chunk = 17;
  CHECK_THROWS_WITH(b.run(b.vop),
                    Contains("op.sub_chunk") && Contains("sub_chunk <= chunk = 16") && Contains("got 17"));
  b.sop.scale = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(b.run(b.sop), Contains("op.scale") && Contains("finite"));
}

TEST_CASE("gated validation: shapes, memory, states and cu_seqlens", "[gated][validation]") {
  GatedBuffers b;
  std::vector<float> big(4096, 1.0f);
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.sop, b.qv(), lcsm::view(big.data(), {2, 8, 2, 5}), b.vv(), b.ov()),
      Contains("argument 'k'") && Contains("expected shape [2, 8, 2, 4]") && Contains("got [2, 8, 2, 5]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.vop, b.qv(), b.kv(), b.vv(), lcsm::view(big.data(), {2, 8, 2, 4})),
                    Contains("argument 'o'") && Contains("got [2, 8, 2, 4]"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.vop, b.qv(), b.kv(), b.vv(), lcsm::view(b.o.data(), {2, 8, 2, 3}, {48, 6, 1, 1})),
      Contains("argument 'o'") && Contains("no two elements share memory"));
  // Outputs must not overlap the gate.
  std::vector<float> shared(b.gv.size() + b.o.size());
  VectorGatedAttention<float> op = b.vop;
  op.log_gate = lcsm::view(static_cast<const float*>(shared.data()), {2, 8, 2, 4});
  for (float& x : shared) x = -0.1f;
  CHECK_THROWS_WITH(forward<float>(b.dev, op, b.qv(), b.kv(), b.vv(), lcsm::view(shared.data() + 10, {2, 8, 2, 3})),
                    Contains("argument 'o'") && Contains("disjoint from 'op.log_gate'"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.sop, b.qv(), b.kv(), b.vv(), b.ov(), {lcsm::view(b.s0.data(), {2, 2, 3, 4}), {}}),
      Contains("argument 'initial_state'") && Contains("[2, 2, 4, 3]") && Contains("got [2, 2, 3, 4]"));
  CHECK_THROWS_WITH(step<float>(b.dev, b.sop, b.qv(), b.kv(), b.vv(), b.ov(), View<float, 4>{}),
                    Contains("argument 'state'") && Contains("absent"));
  // cu_seqlens: the gate of a packed batch is [1, total, H].
  std::vector<std::int32_t> bad{0, 9, 5, 16}, ok{0, 5, 16};
  ScalarGatedAttention<float> packed;
  packed.log_gate = lcsm::view(static_cast<const float*>(b.gs.data()), {1, 16, 2});
  auto run_packed = [&](std::vector<std::int32_t>& cu) {
    forward<float>(b.dev, packed, lcsm::view(b.q.data(), {1, 16, 2, 4}), lcsm::view(b.k.data(), {1, 16, 2, 4}),
                   lcsm::view(b.v.data(), {1, 16, 2, 3}), lcsm::view(b.o.data(), {1, 16, 2, 3}), {b.s0v(), b.s1v()},
                   CuSeqlens(cu.data(), static_cast<index_t>(cu.size())));
  };
  CHECK_NOTHROW(run_packed(ok));
  CHECK_THROWS_WITH(run_packed(bad), Contains("argument 'cu_seqlens'") && Contains("offsets[2] = 5 < offsets[1] = 9"));
  // Backward: d_log_gate has the gate's shape and overlaps nothing.
  auto dq = lcsm::view(b.dq.data(), {2, 8, 2, 4}), dk = lcsm::view(b.dk.data(), {2, 8, 2, 4});
  auto dv = lcsm::view(b.dv.data(), {2, 8, 2, 3});
  CHECK_THROWS_WITH(backward<float>(b.dev, b.sop, b.qv(), b.kv(), b.vv(), b.ov(), dq, dk, dv, {},
                                    lcsm::view(b.dgs.data(), {2, 8, 1})),
                    Contains("argument 'd_log_gate'") && Contains("[2, 8, 2]") && Contains("got [2, 8, 1]"));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.vop, b.qv(), b.kv(), b.vv(), b.ov(), dq, dk, dv, {},
                                    lcsm::view(b.dq.data(), {2, 8, 2, 4})),
                    Contains("'d_log_gate'") && Contains("'dq'") && Contains("disjoint from"));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.vop, b.qv(), b.kv(), b.vv(), b.ov(), dq, dk, dv, {},
                                    lcsm::view(b.gv.data(), {2, 8, 2, 4})),
                    Contains("argument 'd_log_gate'") && Contains("disjoint from 'op.log_gate'"));
  CHECK_THROWS_WITH(
      backward<float>(b.dev, b.vop, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(b.dq.data(), {2, 8, 2, 3}), dk, dv),
      Contains("argument 'dq'") && Contains("got [2, 8, 2, 3]"));
}

// NaN in a value reaches exactly the outputs of its channel from its token on (and no other
// sequence, head or channel); in a key, every channel of its head from its token on; in do (backward),
// dq of its token, dk of every token up to it and dv of its channel up to it. Chunks of 4 and 64 (the
// latter in row panels and sub-chunks), gates from mild to strong.
TEST_CASE("gated: NaN reaches exactly the outputs that depend on it", "[gated][validation][nan]") {
  constexpr index_t B = 2, T = 150, H = 2, D = 8;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto input = [&](int seed, float scale = 1.0f) {
    std::vector<float> x(B * T * H * D);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = scale * static_cast<float>(std::sin(0.37 * i + seed));
    return x;
  };
  auto v4 = [&](std::vector<float>& x) { return lcsm::view(x.data(), {B, T, H, D}); };
  std::vector<float> gs(B * T * H), gv(B * T * H * D);
  for (std::size_t i = 0; i < gs.size(); ++i) gs[i] = -0.05f - 3.0f * static_cast<float>(i % 7 == 0);
  for (std::size_t i = 0; i < gv.size(); ++i) gv[i] = -0.05f - 0.4f * static_cast<float>(i % 5);
  for (index_t chunk : {4, 64})
    for (bool vector : {false, true}) {
      ScalarGatedAttention<float> sop;
      VectorGatedAttention<float> vop;
      sop.log_gate = lcsm::view(static_cast<const float*>(gs.data()), {B, T, H});
      vop.log_gate = lcsm::view(static_cast<const float*>(gv.data()), {B, T, H, D});
      sop.chunk = vop.chunk = chunk;
      vop.sub_chunk = std::min<index_t>(16, chunk);
      const cpu::Device dev{2};
      INFO("chunk=" << chunk << " vector=" << vector);
      {
        std::vector<float> q = input(1), k = input(2), v = input(3), o(B * T * H * D);
        const index_t jk = 100, jv = 40;
        v4(k)(1, jk, 0, 5) = nan;
        v4(v)(0, jv, 1, 2) = nan;
        if (vector) forward<float>(dev, vop, v4(q), v4(k), v4(v), v4(o));
        else forward<float>(dev, sop, v4(q), v4(k), v4(v), v4(o));
        index_t wrong = 0;
        for (index_t b = 0; b < B; ++b)
          for (index_t t = 0; t < T; ++t)
            for (index_t h = 0; h < H; ++h)
              for (index_t c = 0; c < D; ++c) {
                const bool depends = (b == 1 && h == 0 && t >= jk) || (b == 0 && h == 1 && c == 2 && t >= jv);
                wrong += std::isnan(v4(o)(b, t, h, c)) != depends;
              }
        CHECK(wrong == 0);
      }
      {
        std::vector<float> q = input(1), k = input(2), v = input(3), d_o = input(4);
        std::vector<float> dq(q.size()), dk(q.size()), dv(q.size());
        const index_t j = 90;
        v4(d_o)(0, j, 0, 3) = nan;
        if (vector) backward<float>(dev, vop, v4(q), v4(k), v4(v), v4(d_o), v4(dq), v4(dk), v4(dv));
        else backward<float>(dev, sop, v4(q), v4(k), v4(v), v4(d_o), v4(dq), v4(dk), v4(dv));
        index_t wrong = 0;
        for (index_t b = 0; b < B; ++b)
          for (index_t t = 0; t < T; ++t)
            for (index_t h = 0; h < H; ++h)
              for (index_t c = 0; c < D; ++c) {
                const bool here = b == 0 && h == 0;
                wrong += std::isnan(v4(dq)(b, t, h, c)) != (here && t == j);
                wrong += std::isnan(v4(dk)(b, t, h, c)) != (here && t <= j);
                wrong += std::isnan(v4(dv)(b, t, h, c)) != (here && t <= j && c == 3);
              }
        CHECK(wrong == 0);
      }
    }
}

// The work split: one thread, two (sequences cut into segments) and five give the reference's result.
TEST_CASE("gated: threads 1 vs several", "[gated][threads]") {
  constexpr index_t B = 1, T = 3000, H = 1, K = 32, V = 24;
  std::mt19937_64 rng(Catch::rngSeed());
  std::normal_distribution<double> n01;
  std::uniform_real_distribution<double> u(-0.3, 0.0);
  auto make = [&](index_t n) {
    std::vector<double> x(n);
    for (auto& y : x) y = static_cast<float>(n01(rng));
    return x;
  };
  const auto q = make(B * T * H * K), k = make(B * T * H * K), v = make(B * T * H * V), s0 = make(B * H * K * V);
  std::vector<double> g(B * T * H * K);
  for (auto& y : g) y = static_cast<float>(u(rng));
  for (bool vector : {false, true}) {
    std::vector<double> ro(B * T * H * V), rs(s0.size());
    auto d4 = [&](const std::vector<double>& x, index_t D) { return lcsm::view(x.data(), {B, T, H, D}); };
    ScalarGatedAttention<double> sref;
    VectorGatedAttention<double> vref;
    sref.log_gate = lcsm::view(g.data(), {B, T, H});
    vref.log_gate = lcsm::view(g.data(), {B, T, H, K});
    auto refo = lcsm::view(ro.data(), {B, T, H, V});
    auto refs = lcsm::view(rs.data(), {B, H, K, V});
    const auto s0v = lcsm::view(s0.data(), {B, H, K, V});
    if (vector) reference::gated_forward(vref, d4(q, K), d4(k, K), d4(v, V), refo, s0v, refs);
    else reference::gated_forward(sref, d4(q, K), d4(k, K), d4(v, V), refo, s0v, refs);
    std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), vf(v.begin(), v.end()), gf(g.begin(), g.end());
    std::vector<float> s0f(s0.begin(), s0.end());
    for (int threads : {1, 2, 5}) {
      std::vector<float> o(ro.size(), NAN), sT(rs.size(), NAN);
      ScalarGatedAttention<float> sop;
      VectorGatedAttention<float> vop;
      sop.log_gate = lcsm::view(static_cast<const float*>(gf.data()), {B, T, H});
      vop.log_gate = lcsm::view(static_cast<const float*>(gf.data()), {B, T, H, K});
      auto f4 = [&](std::vector<float>& x, index_t D) { return lcsm::view(x.data(), {B, T, H, D}); };
      const StateIO<float> io{lcsm::view(static_cast<const float*>(s0f.data()), {B, H, K, V}),
                              lcsm::view(sT.data(), {B, H, K, V})};
      if (vector) forward<float>(cpu::Device{threads}, vop, f4(qf, K), f4(kf, K), f4(vf, V), f4(o, V), io);
      else forward<float>(cpu::Device{threads}, sop, f4(qf, K), f4(kf, K), f4(vf, V), f4(o, V), io);
      double num = 0, den = 0, snum = 0, sden = 0;
      for (std::size_t i = 0; i < o.size(); ++i) {
        num += (o[i] - ro[i]) * (o[i] - ro[i]);
        den += ro[i] * ro[i];
      }
      for (std::size_t i = 0; i < sT.size(); ++i) {
        snum += (sT[i] - rs[i]) * (sT[i] - rs[i]);
        sden += rs[i] * rs[i];
      }
      INFO("vector=" << vector << " threads=" << threads);
      CHECK(std::sqrt(num / den) < 2e-5);
      CHECK(std::sqrt(snum / sden) < 2e-5);
    }
  }
}
