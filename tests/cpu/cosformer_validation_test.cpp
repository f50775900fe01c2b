// cosFormer on the CPU: bad input throws lcsm::Error naming the argument, the expected and the
// actual value; NaN in an input reaches exactly the outputs that depend on it; the result does not
// depend on the number of threads.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "lcsm/lcsm.hpp"

using namespace lcsm;
using Catch::Contains;

namespace {

struct CosBuffers {
  static constexpr index_t B = 2, T = 8, H = 2, K = 4, V = 3;
  std::vector<float> q, k, v, o, s0, s1;
  std::vector<index_t> positions{0, 0};
  CosFormerAttention op;
  cpu::Device dev{2};
  CosBuffers()
      : q(B * T * H * K, 0.5f), k(q), v(B * T * H * V, 0.25f), o(v.size()), s0(B * H * 2 * K * (V + 1), 0.1f),
        s1(s0.size()) {}
  View<float, 4> qv() { return lcsm::view(q.data(), {B, T, H, K}); }
  View<float, 4> kv() { return lcsm::view(k.data(), {B, T, H, K}); }
  View<float, 4> vv() { return lcsm::view(v.data(), {B, T, H, V}); }
  View<float, 4> ov() { return lcsm::view(o.data(), {B, T, H, V}); }
  View<float, 4> s0v() { return lcsm::view(s0.data(), {B, H, 2 * K, V + 1}); }
  View<float, 4> s1v() { return lcsm::view(s1.data(), {B, H, 2 * K, V + 1}); }
  View<const index_t, 1> pos() { return lcsm::view(static_cast<const index_t*>(positions.data()), {B}); }
  void run() { forward<float>(dev, op, qv(), kv(), vv(), ov(), {s0v(), s1v()}); }
  void decode() { step<float>(dev, op, qv(), kv(), vv(), ov(), s1v()); }
};

}  // namespace

TEST_CASE("cosformer validation: a well-formed call runs", "[cosformer][validation]") {
  CosBuffers b;
  CHECK_NOTHROW(b.run());
  b.op.length = 20;
  b.op.positions = b.pos();
  CHECK_NOTHROW(b.decode());
}

TEST_CASE("cosformer validation: M, eps and chunk", "[cosformer][validation]") {
  CosBuffers b;
  b.op.length = 5;
  CHECK_THROWS_WITH(b.run(), Contains("lcsm::forward(cpu, CosFormerAttention)") && Contains("argument 'op.length'") &&
                                 Contains("M >= position + length") &&
                                 Contains("M = 5 smaller than the length: sequence 0 at position 0 with 8 tokens"));
  b.op.length = 0;
  CHECK_THROWS_WITH(b.run(), Contains("argument 'op.length'") && Contains("M >= 1") && Contains("got 0"));
  b.op.length = 10;
  b.positions = {0, 3};
  b.op.positions = b.pos();
  CHECK_THROWS_WITH(b.run(), Contains("op.length") && Contains("sequence 1 at position 3 with 8 tokens reaches 11"));
  b.positions = {0, -1};
  CHECK_THROWS_WITH(
      b.run(), Contains("argument 'op.positions'") && Contains("positions >= 0") && Contains("got positions[1] = -1"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), {},
                                   CuSeqlens(std::vector<std::int32_t>{0, 16}.data(), 2)),
                    Contains("argument 'cu_seqlens'"));
  b.op.positions = {};
  b.op.length.reset();
  for (double eps : {0.0, -1e-6, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    b.op.eps = eps;
    CHECK_THROWS_WITH(b.run(), Contains("argument 'op.eps'") && Contains("a finite eps > 0"));
  }
  b.op.eps = 1e-6;
  b.op.chunk = 0;
  CHECK_THROWS_WITH(b.run(), Contains("argument 'op.chunk'") && Contains("got 0"));
  b.op.chunk = 2048;
  CHECK_THROWS_WITH(b.run(), Contains("argument 'op.chunk'") && Contains("got 2048"));
}

TEST_CASE("cosformer validation: states are [N, H, 2K, V+1]", "[cosformer][validation]") {
  CosBuffers b;
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), {lcsm::view(b.s0.data(), {2, 2, 4, 3}), {}}),
      Contains("argument 'initial_state'") && Contains("expected shape [2, 2, 8, 4] [N, H, 2K, V+1]") &&
          Contains("got [2, 2, 4, 3]"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), {{}, lcsm::view(b.s1.data(), {2, 2, 8, 3})}),
      Contains("argument 'final_state'") && Contains("[2, 2, 8, 4]") && Contains("got [2, 2, 8, 3]"));
  // In place is fine, partial overlap is not.
  CHECK_NOTHROW(forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), {b.s0v(), b.s0v()}));
  std::vector<float> states(2 * b.s0.size());
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(),
                     {lcsm::view(states.data(), {2, 2, 8, 4}), lcsm::view(states.data() + 5, {2, 2, 8, 4})}),
      Contains("argument 'final_state'") && Contains("disjoint from 'initial_state'"));
  // Non-causal takes states too (added to the sequence's sums, docs/model.md).
  b.op.causal = false;
  CHECK_NOTHROW(b.run());
}

TEST_CASE("cosformer validation: shapes, memory and cu_seqlens", "[cosformer][validation]") {
  CosBuffers b;
  std::vector<float> big(4096, 1.0f);
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.qv(), lcsm::view(big.data(), {2, 8, 2, 5}), b.vv(), b.ov()),
                    Contains("lcsm::forward(cpu, CosFormerAttention)") && Contains("argument 'k'") &&
                        Contains("expected shape [2, 8, 2, 4]") && Contains("got [2, 8, 2, 5]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), lcsm::view(big.data(), {2, 8, 2, 4})),
                    Contains("argument 'o'") && Contains("got [2, 8, 2, 4]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, lcsm::view<float>(nullptr, {2, 8, 2, 4}), b.kv(), b.vv(), b.ov()),
                    Contains("argument 'q'") && Contains("non-null data"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), lcsm::view(b.o.data(), {2, 8, 2, 3}, {48, 6, 1, 1})),
      Contains("argument 'o'") && Contains("no two elements share memory"));
  std::vector<float> shared(b.q.size() + b.o.size());
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, lcsm::view(shared.data(), {2, 8, 2, 4}), b.kv(), b.vv(),
                                   lcsm::view(shared.data() + 40, {2, 8, 2, 3})),
                    Contains("argument 'o'") && Contains("disjoint from 'q'"));
  auto packed = [&](std::vector<std::int32_t> cu) {
    forward<float>(b.dev, b.op, lcsm::view(b.q.data(), {1, 16, 2, 4}), lcsm::view(b.k.data(), {1, 16, 2, 4}),
                   lcsm::view(b.v.data(), {1, 16, 2, 3}), lcsm::view(b.o.data(), {1, 16, 2, 3}), {},
                   CuSeqlens(cu.data(), static_cast<index_t>(cu.size())));
  };
  CHECK_NOTHROW(packed({0, 5, 16}));
  CHECK_THROWS_WITH(packed({1, 5, 16}), Contains("argument 'cu_seqlens'") && Contains("got offsets[0] = 1"));
  CHECK_THROWS_WITH(packed({0, 9, 5, 16}), Contains("non-decreasing"));
  CHECK_THROWS_WITH(packed({0, 5, 15}), Contains("packed length T = 16") && Contains("got offsets[N] = 15"));
  // M applies to each packed sequence at its own positions: 11 tokens need M >= 11.
  b.op.length = 10;
  CHECK_THROWS_WITH(packed({0, 5, 16}), Contains("op.length") && Contains("sequence 1 at position 0 with 11 tokens"));
}

TEST_CASE("cosformer validation: decode", "[cosformer][validation][step]") {
  CosBuffers b;
  b.op.length = 20;
  CHECK_THROWS_WITH(b.decode(), Contains("lcsm::step(cpu, CosFormerAttention)") &&
                                    Contains("argument 'op.positions'") &&
                                    Contains("[2] positions of the first decode token") && Contains("absent view"));
  std::vector<index_t> three{0, 0, 0};
  b.op.positions = lcsm::view(static_cast<const index_t*>(three.data()), {3});
  CHECK_THROWS_WITH(b.decode(),
                    Contains("argument 'op.positions'") && Contains("expected shape [2]") && Contains("got [3]"));
  b.op.positions = b.pos();
  b.positions = {0, 13};  // 13 + 8 tokens > M = 20
  CHECK_THROWS_WITH(b.decode(),
                    Contains("argument 'op.length'") && Contains("sequence 1 at position 13 with 8 tokens reaches 21"));
  b.positions = {0, 12};
  CHECK_NOTHROW(b.decode());
  b.op.length.reset();
  CHECK_THROWS_WITH(b.decode(),
                    Contains("argument 'op.length'") && Contains("a fixed M for decode") && Contains("got unset"));
  b.op.length = 20;
  b.op.causal = false;
  CHECK_THROWS_WITH(b.decode(), Contains("argument 'op.causal'") && Contains("causal = true"));
  b.op.causal = true;
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), View<float, 4>{}),
                    Contains("argument 'state'") && Contains("[B, H, 2K, V+1] state") && Contains("absent"));
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(b.s1.data(), {2, 2, 4, 3})),
                    Contains("argument 'state'") && Contains("[2, 2, 8, 4]") && Contains("got [2, 2, 4, 3]"));
}

TEST_CASE("cosformer validation: backward", "[cosformer][validation][backward]") {
  CosBuffers b;
  std::vector<float> dq(b.q.size()), dk(b.k.size()), dv(b.v.size()), ds(b.s0.size());
  auto dqv = lcsm::view(dq.data(), {2, 8, 2, 4}), dkv = lcsm::view(dk.data(), {2, 8, 2, 4});
  auto dvv = lcsm::view(dv.data(), {2, 8, 2, 3});
  CHECK_NOTHROW(backward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), dqv, dkv, dvv,
                                {b.s0v(), b.s1v(), lcsm::view(ds.data(), {2, 2, 8, 4})}));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), dqv, dkv, dvv,
                                    {{}, lcsm::view(b.s1.data(), {2, 2, 4, 3}), {}}),
                    Contains("lcsm::backward(cpu, CosFormerAttention)") && Contains("argument 'd_final_state'") &&
                        Contains("[N, H, 2K, V+1]") && Contains("got [2, 2, 4, 3]"));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), dqv, dqv, dvv),
                    Contains("argument 'dk'") && Contains("disjoint from 'dq'"));
  b.op.length = 3;
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), dqv, dkv, dvv),
                    Contains("op.length") && Contains("M = 3 smaller than the length"));
}

// NaN in a key reaches every channel of the outputs from its token on (causal) or of the whole
// sequence (non-causal); NaN in a value one channel; NaN in do reaches dq of its token, dk of every
// token up to it and dv of one channel up to it. Two threads, blocks cut into row panels.
TEST_CASE("cosformer: NaN reaches exactly the outputs that depend on it", "[cosformer][validation][nan]") {
  constexpr index_t T = 150, H = 2, D = 8;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto input = [&](int seed) {
    std::vector<float> x(T * H * D);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.37 * i + seed));
    return x;
  };
  const cpu::Device dev{2};
  auto v4 = [&](std::vector<float>& x) { return lcsm::view(x.data(), {1, T, H, D}); };
  for (bool causal : {true, false}) {
    CosFormerAttention op;
    op.causal = causal;
    op.feature_map = causal ? CosFormerAttention::FeatureMap::relu : CosFormerAttention::FeatureMap::elu_plus_one;
    std::vector<float> q = input(1), k = input(2), v = input(3), o(T * H * D);
    const index_t jk = 100, jv = 40;
    v4(k)(0, jk, 0, 5) = nan;  // head 0
    v4(v)(0, jv, 1, 2) = nan;  // head 1, channel 2
    forward<float>(dev, op, v4(q), v4(k), v4(v), v4(o));
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < D; ++c) {
          const bool depends = (h == 0 && (t >= jk || !causal)) || (h == 1 && c == 2 && (t >= jv || !causal));
          INFO("causal=" << causal << " o t=" << t << " h=" << h << " c=" << c);
          CHECK(std::isnan(v4(o)(0, t, h, c)) == depends);
        }
  }
  {
    CosFormerAttention op;
    std::vector<float> q = input(1), k = input(2), v = input(3), d_o = input(4);
    std::vector<float> dq(T * H * D), dk(dq.size()), dv(dq.size());
    const index_t j = 90;
    v4(d_o)(0, j, 0, 3) = nan;  // head 0, channel 3
    backward<float>(dev, op, v4(q), v4(k), v4(v), v4(d_o), v4(dq), v4(dk), v4(dv));
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < D; ++c) {
          INFO("t=" << t << " h=" << h << " c=" << c);
          // dq = phi'(q) (.) (...): ReLU's zero derivative does not hide the NaN (0 * NaN).
          CHECK(std::isnan(v4(dq)(0, t, h, c)) == (h == 0 && t == j));
          CHECK(std::isnan(v4(dk)(0, t, h, c)) == (h == 0 && t <= j));
          CHECK(std::isnan(v4(dv)(0, t, h, c)) == (h == 0 && t <= j && c == 3));
        }
  }
}

TEST_CASE("cosformer: strong inputs and clamped denominators stay finite", "[cosformer][validation][nan]") {
  // ReLU with every query negative: all scores 0, the denominator clamps to eps and o = 0 exactly;
  // large 1 + ELU features never overflow (exp is only taken of negative numbers).
  constexpr index_t T = 70, H = 1, D = 4;
  std::vector<float> q(T * H * D, -1.0f), k(q.size(), 1e3f), v(q.size(), 1.0f), o(q.size());
  std::vector<float> dq(q.size()), dk(q.size()), dv(q.size());
  auto v4 = [&](std::vector<float>& x) { return lcsm::view(x.data(), {1, T, H, D}); };
  CosFormerAttention op;
  forward<float>(cpu::Device{2}, op, v4(q), v4(k), v4(v), v4(o));
  for (float x : o) CHECK(x == 0.0f);
  backward<float>(cpu::Device{2}, op, v4(q), v4(k), v4(v), v4(v), v4(dq), v4(dk), v4(dv));
  for (std::size_t i = 0; i < q.size(); ++i)
    CHECK((std::isfinite(dq[i]) && std::isfinite(dk[i]) && std::isfinite(dv[i])));
  op.feature_map = CosFormerAttention::FeatureMap::elu_plus_one;
  std::fill(q.begin(), q.end(), -80.0f);
  forward<float>(cpu::Device{2}, op, v4(q), v4(k), v4(v), v4(o));
  for (float x : o) CHECK(std::isfinite(x));
}

TEST_CASE("cosformer: the result does not depend on the thread count", "[cosformer][threads]") {
  // One head of 2000 tokens: cut into 1, 2 or 3 segments; results equal to rounding.
  constexpr index_t T = 2000, H = 1, D = 32;
  auto input = [&](int seed) {
    std::vector<double> x(T * H * D);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37 * i + seed) + 0.3 * std::cos(1.7 * i * seed);
    return x;
  };
  std::vector<double> q = input(1), k = input(2), v = input(3), d_o = input(4);
  auto v4 = [&](std::vector<double>& x) { return lcsm::view(x.data(), {1, T, H, D}); };
  for (bool causal : {true, false}) {
    CosFormerAttention op;
    op.causal = causal;
    std::vector<std::vector<double>> outs;
    for (int threads : {1, 2, 3}) {
      std::vector<double> o(T * H * D), dq(o.size()), dk(o.size()), dv(o.size()), sT(H * 2 * D * (D + 1));
      forward<double>(cpu::Device{threads}, op, v4(q), v4(k), v4(v), v4(o),
                      {{}, lcsm::view(sT.data(), {1, H, 2 * D, D + 1})});
      backward<double>(cpu::Device{threads}, op, v4(q), v4(k), v4(v), v4(d_o), v4(dq), v4(dk), v4(dv));
      std::vector<double> all;
      for (const auto* x : {&o, &sT, &dq, &dk, &dv}) all.insert(all.end(), x->begin(), x->end());
      outs.push_back(std::move(all));
    }
    for (std::size_t t = 1; t < outs.size(); ++t) {
      double worst = 0, scale = 0;
      for (std::size_t i = 0; i < outs[0].size(); ++i) {
        worst = std::max(worst, std::fabs(outs[t][i] - outs[0][i]));
        scale = std::max(scale, std::fabs(outs[0][i]));
      }
      INFO("causal=" << causal << " threads variant " << t << ": max difference " << worst << " of " << scale);
      CHECK(worst <= 1e-11 * scale);
    }
  }
}
