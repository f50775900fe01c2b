// Bad input: every public entry point throws lcsm::Error naming the argument, the expected and
// the actual value. And NaN in an input propagates to exactly the outputs that depend on it.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "lcsm/lcsm.hpp"

using namespace lcsm;
using Catch::Contains;

namespace {

struct Buffers {
  static constexpr index_t B = 2, T = 8, H = 2, K = 4, V = 3;
  std::vector<float> q, k, v, o, s0, s1;
  LightningAttention op;
  cpu::Device dev{2};
  Buffers()
      : q(B * T * H * K, 0.5f), k(q), v(B * T * H * V, 0.25f), o(v.size()), s0(B * H * K * V, 0.1f), s1(s0.size()) {
    op.log_decay = {-0.1, -0.2};
  }
  View<float, 4> qv() { return lcsm::view(q.data(), {B, T, H, K}); }
  View<float, 4> kv() { return lcsm::view(k.data(), {B, T, H, K}); }
  View<float, 4> vv() { return lcsm::view(v.data(), {B, T, H, V}); }
  View<float, 4> ov() { return lcsm::view(o.data(), {B, T, H, V}); }
  View<float, 4> s0v() { return lcsm::view(s0.data(), {B, H, K, V}); }
  View<float, 4> s1v() { return lcsm::view(s1.data(), {B, H, K, V}); }
  void run() { forward<float>(dev, op, qv(), kv(), vv(), ov(), {s0v(), s1v()}); }
};

}  // namespace

TEST_CASE("validation: a well-formed call runs", "[validation]") {
  Buffers b;
  CHECK_NOTHROW(b.run());
}

TEST_CASE("validation: shapes", "[validation]") {
  Buffers b;
  std::vector<float> big(4096, 1.0f);
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), lcsm::view(big.data(), {2, 8, 2, 5}), b.vv(), b.ov()),
      Contains("argument 'k'") && Contains("expected shape [2, 8, 2, 4]") && Contains("got [2, 8, 2, 5]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.qv(), b.kv(), lcsm::view(big.data(), {2, 7, 2, 3}), b.ov()),
                    Contains("argument 'v'") && Contains("[2, 8, 2, 3]") && Contains("got [2, 7, 2, 3]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), lcsm::view(big.data(), {2, 8, 2, 4})),
                    Contains("argument 'o'") && Contains("got [2, 8, 2, 4]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, lcsm::view(big.data(), {2, 8, 2, 0}),
                                   lcsm::view(big.data() + 1, {2, 8, 2, 0}), b.vv(), b.ov()),
                    Contains("argument 'q'") && Contains("K >= 1") && Contains("got [2, 8, 2, 0]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.qv(), b.kv(), lcsm::view(big.data(), {2, 8, 2, 0}),
                                   lcsm::view(b.o.data(), {2, 8, 2, 0})),
                    Contains("argument 'v'") && Contains("V >= 1"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, lcsm::view(b.q.data(), {2, 8, 0, 4}), lcsm::view(b.k.data(), {2, 8, 0, 4}),
                     lcsm::view(b.v.data(), {2, 8, 0, 3}), lcsm::view(b.o.data(), {2, 8, 0, 3})),
      Contains("H >= 1"));
  // Wrong rank from a run-time-ranked tensor.
  CHECK_THROWS_WITH(view_as<4>(b.q.data(), {2, 8, 8}, {}, "q"),
                    Contains("argument 'q'") && Contains("expected rank 4") && Contains("got rank 3"));
}

TEST_CASE("validation: T = 0 is a no-op that carries the state", "[validation]") {
  Buffers b;
  auto empty = [](float* p, index_t D) { return lcsm::view(p, {2, 0, 2, D}); };
  forward<float>(b.dev, b.op, empty(b.q.data(), 4), empty(b.k.data(), 4), empty(b.v.data(), 3), empty(b.o.data(), 3),
                 {b.s0v(), b.s1v()});
  CHECK(b.s1 == b.s0);
  // Null data is fine when there is nothing to read.
  CHECK_NOTHROW(
      forward<float>(b.dev, b.op, empty(nullptr, 4), empty(nullptr, 4), empty(nullptr, 3), empty(nullptr, 3)));
}

TEST_CASE("validation: memory", "[validation]") {
  Buffers b;
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, lcsm::view<float>(nullptr, {2, 8, 2, 4}), b.kv(), b.vv(), b.ov()),
      Contains("argument 'q'") && Contains("non-null data") && Contains("null data with shape [2, 8, 2, 4]"));
  // Output whose strides make two indices share an element.
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), lcsm::view(b.o.data(), {2, 8, 2, 3}, {48, 6, 1, 1})),
      Contains("argument 'o'") && Contains("no two elements share memory") && Contains("strides [48, 6, 1, 1]"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), lcsm::view(b.o.data(), {2, 8, 2, 3}, {0, 6, 3, 1})),
      Contains("argument 'o'") && Contains("no two elements share memory"));
  // Output overlapping an input.
  std::vector<float> shared(b.q.size() + b.o.size());
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, lcsm::view(shared.data(), {2, 8, 2, 4}), b.kv(), b.vv(),
                                   lcsm::view(shared.data() + 40, {2, 8, 2, 3})),
                    Contains("argument 'o'") && Contains("disjoint from 'q'"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), lcsm::view(b.o.data(), {2, 8, 2, 3}, {48, 6, 3, -1})),
      Contains("argument 'o'") && Contains("non-negative strides"));
  // The final state may overwrite the initial state exactly, but not overlap it partly.
  CHECK_NOTHROW(forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), {b.s0v(), b.s0v()}));
  std::vector<float> states(2 * b.s0.size());
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(),
                     {lcsm::view(states.data(), {2, 2, 4, 3}), lcsm::view(states.data() + 5, {2, 2, 4, 3})}),
      Contains("argument 'final_state'") && Contains("disjoint from 'initial_state'"));
}

TEST_CASE("validation: decay, scale and chunk", "[validation]") {
  Buffers b;
  b.op.log_decay = {-0.1, 0.5};
  CHECK_THROWS_WITH(b.run(), Contains("argument 'op.log_decay'") && Contains("g <= 0") && Contains("g[1] = 0.5"));
  b.op.log_decay = {std::numeric_limits<double>::quiet_NaN(), -0.1};
  CHECK_THROWS_WITH(b.run(), Contains("op.log_decay") && Contains("g[0] = nan"));
  b.op.log_decay = {-0.1};
  CHECK_THROWS_WITH(b.run(), Contains("op.log_decay") && Contains("2 per-head log-decays") && Contains("got 1 values"));
  b.op.log_decay = {-0.1, -0.1};
  b.op.chunk = 0;
  CHECK_THROWS_WITH(b.run(), Contains("op.chunk") && Contains("got 0"));
  b.op.chunk = 64;
  b.op.scale = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(b.run(), Contains("op.scale") && Contains("finite"));
}

TEST_CASE("validation: cu_seqlens", "[validation][varlen]") {
  Buffers b;
  auto packed = [&](std::vector<std::int32_t>& cu, index_t batch = 1) {
    return [&b, &cu, batch] {
      const index_t T = 16 / batch;
      forward<float>(b.dev, b.op, lcsm::view(b.q.data(), {batch, T, 2, 4}), lcsm::view(b.k.data(), {batch, T, 2, 4}),
                     lcsm::view(b.v.data(), {batch, T, 2, 3}), lcsm::view(b.o.data(), {batch, T, 2, 3}), {},
                     CuSeqlens(cu.data(), static_cast<index_t>(cu.size())));
    };
  };
  std::vector<std::int32_t> ok{0, 5, 16}, bad_start{1, 5, 16}, decreasing{0, 9, 5, 16}, bad_end{0, 5, 15}, one{0};
  CHECK_NOTHROW(packed(ok)());
  CHECK_THROWS_WITH(packed(bad_start)(),
                    Contains("argument 'cu_seqlens'") && Contains("offsets[0] = 0") && Contains("got offsets[0] = 1"));
  CHECK_THROWS_WITH(packed(decreasing)(), Contains("non-decreasing") && Contains("offsets[2] = 5 < offsets[1] = 9"));
  CHECK_THROWS_WITH(packed(bad_end)(), Contains("packed length T = 16") && Contains("got offsets[N] = 15"));
  CHECK_THROWS_WITH(packed(one)(), Contains("at least 2 offsets"));
  CHECK_THROWS_WITH(packed(ok, 2)(), Contains("B = 1") && Contains("got B = 2"));
  // States are per sequence: N = 2 here, so a [2, H, K, V] state fits and B's does not matter.
  std::vector<std::int64_t> cu64{0, 5, 16};
  CHECK_NOTHROW(forward<float>(b.dev, b.op, lcsm::view(b.q.data(), {1, 16, 2, 4}),
                               lcsm::view(b.k.data(), {1, 16, 2, 4}), lcsm::view(b.v.data(), {1, 16, 2, 3}),
                               lcsm::view(b.o.data(), {1, 16, 2, 3}), {b.s0v(), b.s1v()}, CuSeqlens(cu64.data(), 3)));
}

TEST_CASE("validation: states", "[validation]") {
  Buffers b;
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), {lcsm::view(b.s0.data(), {2, 2, 3, 4}), {}}),
      Contains("argument 'initial_state'") && Contains("[2, 2, 4, 3]") && Contains("got [2, 2, 3, 4]"));
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), {{}, lcsm::view(b.s1.data(), {1, 2, 4, 3})}),
      Contains("argument 'final_state'") && Contains("got [1, 2, 4, 3]"));
}

TEST_CASE("validation: decode and backward", "[validation][step][backward]") {
  Buffers b;
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), View<float, 4>{}),
                    Contains("argument 'state'") && Contains("absent"));
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(b.s1.data(), {2, 2, 3, 4})),
                    Contains("argument 'state'") && Contains("got [2, 2, 3, 4]"));
  std::vector<float> dq(b.q.size()), dk(b.k.size()), dv(b.v.size()), dg(3);
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(dq.data(), {2, 8, 2, 4}),
                                    lcsm::view(dk.data(), {2, 8, 2, 4}), lcsm::view(dv.data(), {2, 8, 2, 3}), {},
                                    lcsm::view(dg.data(), {3})),
                    Contains("argument 'd_log_decay'") && Contains("[2]") && Contains("got [3]"));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(dq.data(), {2, 8, 2, 3}),
                                    lcsm::view(dk.data(), {2, 8, 2, 4}), lcsm::view(dv.data(), {2, 8, 2, 3})),
                    Contains("argument 'dq'") && Contains("got [2, 8, 2, 3]"));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov(), lcsm::view(dq.data(), {2, 8, 2, 4}),
                                    lcsm::view(dq.data(), {2, 8, 2, 4}), lcsm::view(dv.data(), {2, 8, 2, 3})),
                    Contains("argument 'dk'") && Contains("disjoint from 'dq'"));
}

TEST_CASE("NaN in an input reaches exactly the outputs that depend on it", "[validation][nan]") {
  for (index_t chunk : {4, 64}) {
    Buffers b;
    b.op.chunk = chunk;
    for (std::size_t i = 0; i < b.v.size(); ++i) b.v[i] = static_cast<float>(std::sin(0.37 * i));
    const index_t j = 5;
    b.vv()(1, j, 0, 2) = std::numeric_limits<float>::quiet_NaN();
    forward<float>(b.dev, b.op, b.qv(), b.kv(), b.vv(), b.ov());
    for (index_t bb = 0; bb < 2; ++bb)
      for (index_t t = 0; t < 8; ++t)
        for (index_t h = 0; h < 2; ++h)
          for (index_t c = 0; c < 3; ++c) {
            const bool depends = bb == 1 && h == 0 && c == 2 && t >= j;
            INFO("chunk=" << chunk << " b=" << bb << " t=" << t << " h=" << h << " c=" << c);
            CHECK(std::isnan(b.ov()(bb, t, h, c)) == depends);
          }
  }
}

// The same over blocks the CPU backend cuts into row panels (a causal block of 64 rows is formed in
// panels of 16, the panels above the diagonal never): NaN in a key reaches every channel of the
// outputs from its token on, NaN in a value one channel; NaN in do reaches dq of its token, dk of
// every token up to it and dv of one channel up to it. Two threads, two heads, decays from ALiBi.
TEST_CASE("NaN stays where it belongs across row panels, forward and backward", "[validation][nan]") {
  constexpr index_t T = 150, H = 2, D = 8;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto input = [&](int seed) {
    std::vector<float> x(T * H * D);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.37 * i + seed));
    return x;
  };
  LightningAttention op;
  op.log_decay = decay::alibi(H);
  const cpu::Device dev{2};
  auto v4 = [&](std::vector<float>& x) { return lcsm::view(x.data(), {1, T, H, D}); };
  {
    std::vector<float> q = input(1), k = input(2), v = input(3), o(T * H * D);
    const index_t jk = 100, jv = 40;
    v4(k)(0, jk, 0, 5) = nan;  // head 0
    v4(v)(0, jv, 1, 2) = nan;  // head 1, channel 2
    forward<float>(dev, op, v4(q), v4(k), v4(v), v4(o));
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < D; ++c) {
          const bool depends = (h == 0 && t >= jk) || (h == 1 && c == 2 && t >= jv);
          INFO("o t=" << t << " h=" << h << " c=" << c);
          CHECK(std::isnan(v4(o)(0, t, h, c)) == depends);
        }
  }
  {
    std::vector<float> q = input(1), k = input(2), v = input(3), d_o = input(4);
    std::vector<float> dq(T * H * D), dk(dq.size()), dv(dq.size());
    const index_t j = 90;
    v4(d_o)(0, j, 0, 3) = nan;  // head 0, channel 3
    backward<float>(dev, op, v4(q), v4(k), v4(v), v4(d_o), v4(dq), v4(dk), v4(dv));
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < D; ++c) {
          INFO("t=" << t << " h=" << h << " c=" << c);
          CHECK(std::isnan(v4(dq)(0, t, h, c)) == (h == 0 && t == j));
          CHECK(std::isnan(v4(dk)(0, t, h, c)) == (h == 0 && t <= j));
          CHECK(std::isnan(v4(dv)(0, t, h, c)) == (h == 0 && t <= j && c == 3));
        }
  }
}
