// Lightning attention forward and decode on the backend under test, against the float64 reference.
// Every case runs for every dtype the backend has; outputs are poisoned with NaN before each call.
#include <catch2/catch.hpp>

#include "suite/lightning_problem.hpp"
#include "suite/seeds.hpp"

using namespace lcsm;
using namespace lcsm::test;

namespace {

// Runs one case on the backend and checks output and final state against the reference.
void check_forward(const LightningCase& c, Dtype dtype, double slack = 1.0) {
  const std::uint64_t seed = fresh_seed();
  INFO(backend().name() << " " << name(dtype) << " " << c.str() << " seed=" << seed);
  const LightningProblemData p(c, dtype, seed);
  Tensor o = p.output(), sT = p.state_output();
  backend().lightning_forward(p.op, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
  std::vector<double> ro, rs;
  p.reference(ro, rs);
  const Verdict vo = judge(o.to_double(), ro, tolerance(dtype, ro, slack));
  INFO("output: " << vo.str());
  CHECK(vo.ok);
  const Verdict vs = judge(sT.to_double(), rs, tolerance(state_dtype(dtype), rs, slack));
  INFO("final state: " << vs.str());
  CHECK(vs.ok);
}

LightningCase make(index_t B, index_t T, index_t H, index_t K, index_t V, DecayKind d, bool state = false) {
  LightningCase c;
  c.B = B;
  c.T = T;
  c.H = H;
  c.K = K;
  c.V = V;
  c.decay = d;
  c.with_state = state;
  return c;
}

}  // namespace

TEST_CASE("lightning forward: sequence lengths around the tile", "[lightning][forward]") {
  for (Dtype dt : backend().dtypes())
    for (index_t T : {1, 2, 63, 64, 65, 127, 200, 1000})
      for (bool state : {false, true}) check_forward(make(2, T, 2, 64, 64, DecayKind::mixed, state), dt);
}

TEST_CASE("lightning forward: head dimensions", "[lightning][forward]") {
  const std::pair<index_t, index_t> dims[] = {{16, 16},  {60, 100}, {100, 60},  {64, 64},  {128, 128},
                                              {256, 64}, {64, 256}, {256, 256}, {16, 128}, {128, 16}};
  for (Dtype dt : backend().dtypes())
    for (auto [K, V] : dims) check_forward(make(1, 131, 2, K, V, DecayKind::weak, true), dt);
}

TEST_CASE("lightning forward: decay from none to strong", "[lightning][forward]") {
  for (Dtype dt : backend().dtypes())
    for (DecayKind d :
         {DecayKind::none, DecayKind::weak, DecayKind::mixed, DecayKind::retnet, DecayKind::strong, DecayKind::floor})
      for (bool state : {false, true}) check_forward(make(2, 300, 4, 64, 64, d, state), dt);
}

TEST_CASE("lightning forward: long sequence", "[lightning][forward][long]") {
  for (Dtype dt : backend().dtypes()) {
    check_forward(make(1, 4097, 2, 128, 128, DecayKind::weak, true), dt);
    check_forward(make(1, 4097, 2, 64, 64, DecayKind::none, false), dt);
  }
}

// lambda = exp(-1e-6) over 64K tokens: the state is decayed 1024 times by lambda^64 ~ 1 - 6.4e-5. A
// float state may gather rounding like the square root of the number of blocks, never linearly (a
// factor rounded the same way in every block: 7e-6 at 64K before, the last 4K tokens 14x worse than
// the first 4K). One head, K = V = 16: quick.
TEST_CASE("lightning forward: faint decay over 64K tokens", "[lightning][forward][long][accuracy]") {
  for (Dtype dt : backend().dtypes()) {
    const std::uint64_t seed = fresh_seed();
    const LightningCase c = make(1, 65536, 1, 16, 16, DecayKind::faint, false);
    INFO(backend().name() << " " << name(dt) << " " << c.str() << " seed=" << seed);
    const LightningProblemData p(c, dt, seed);
    Tensor o = p.output(), sT = p.state_output();
    backend().lightning_forward(p.op, p.q, p.k, p.v, o, nullptr, &sT, nullptr);
    std::vector<double> ro, rs;
    p.reference(ro, rs);
    const std::vector<double> got = o.to_double();
    const Verdict vo = judge(got, ro, tolerance(dt, ro));
    INFO("output: " << vo.str());
    CHECK(vo.ok);
    const Verdict vs = judge(sT.to_double(), rs, tolerance(state_dtype(dt), rs));
    INFO("final state: " << vs.str());
    CHECK(vs.ok);
    const Growth g = error_growth(got, ro, 16, 4096);
    INFO(g.str());
    CHECK(g.within(6.0, 1e-7));
  }
}

// op.scale set (MiniMax-01 uses 1): every entry point must use it, not 1/sqrt(K).
TEST_CASE("lightning forward: the scale", "[lightning][forward][scale]") {
  for (Dtype dt : backend().dtypes())
    for (double scale : {1.0, 0.37, 2.5}) {
      LightningCase c = make(2, 150, 2, 64, 32, DecayKind::mixed, true);
      c.scale = scale;
      check_forward(c, dt);
      c.varlen = {100, 0, 50};  // cut into segments on the CPU
      c.B = 1;
      c.H = 1;
      check_forward(c, dt);
    }
}

TEST_CASE("lightning decode: the scale", "[lightning][step][scale]") {
  for (Dtype dt : backend().dtypes()) {
    const std::uint64_t seed = fresh_seed();
    LightningCase c = make(3, 2, 2, 32, 16, DecayKind::retnet, true);
    c.scale = 0.37;
    INFO(name(dt) << " " << c.str() << " seed=" << seed);
    const LightningProblemData p(c, dt, seed);
    std::vector<double> ro, rs;
    p.reference(ro, rs);
    Tensor o = p.output(), state = p.state_output();
    state.assign(p.s0d);
    backend().lightning_step(p.op, p.q, p.k, p.v, o, state);
    const Verdict vo = judge(o.to_double(), ro, tolerance(dt, ro));
    INFO(vo.str());
    CHECK(vo.ok);
  }
}

TEST_CASE("lightning forward: [B, H, T, D] memory through strides", "[lightning][forward]") {
  for (Dtype dt : backend().dtypes()) {
    LightningCase c = make(2, 150, 3, 64, 32, DecayKind::mixed, true);
    c.strided = true;
    check_forward(c, dt);
  }
}

TEST_CASE("lightning forward: more heads than threads and one head alone", "[lightning][forward]") {
  for (Dtype dt : backend().dtypes()) {
    check_forward(make(3, 333, 5, 32, 48, DecayKind::mixed, true), dt);
    check_forward(make(1, 300, 16, 32, 32, DecayKind::strong, true), dt);  // CPU: groups of heads
    check_forward(make(1, 2000, 1, 64, 64, DecayKind::weak, true), dt);    // cut into segments on the CPU
  }
}

TEST_CASE("lightning forward: varlen with per-sequence states", "[lightning][forward][varlen]") {
  for (Dtype dt : backend().dtypes())
    for (bool state : {false, true})
      for (bool i64 : {false, true}) {
        check_forward(varlen_case({1, 63, 700, 64}, 2, 64, 64, DecayKind::mixed, state, i64), dt);
        check_forward(varlen_case({129, 0, 5, 1}, 3, 32, 32, DecayKind::weak, state, i64), dt);
      }
}

TEST_CASE("lightning forward: varlen equals separate calls", "[lightning][forward][varlen][invariant]") {
  for (Dtype dt : backend().dtypes()) {
    const std::vector<index_t> lengths{100, 1, 65, 300};
    const LightningCase packed = varlen_case(lengths, 2, 32, 32, DecayKind::mixed, true);
    const std::uint64_t seed = fresh_seed();
    INFO(name(dt) << " seed=" << seed);
    const LightningProblemData p(packed, dt, seed);
    Tensor o = p.output(), sT = p.state_output();
    backend().lightning_forward(p.op, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
    index_t start = 0;
    for (std::size_t n = 0; n < lengths.size(); ++n) {
      const index_t L = lengths[n];
      Tensor q(dt, {1, L, 2, 32}), k(dt, {1, L, 2, 32}), v(dt, {1, L, 2, 32}), on(dt, {1, L, 2, 32});
      Tensor s0(state_dtype(dt), {1, 2, 32, 32}), sn(state_dtype(dt), {1, 2, 32, 32});
      q.for_each_index([&](index_t, index_t t, index_t h, index_t d) {
        q.set(0, t, h, d, p.q.get(0, start + t, h, d));
        k.set(0, t, h, d, p.k.get(0, start + t, h, d));
        v.set(0, t, h, d, p.v.get(0, start + t, h, d));
      });
      s0.for_each_index([&](index_t, index_t h, index_t a, index_t b) {
        s0.set(0, h, a, b, p.s0.get(static_cast<index_t>(n), h, a, b));
      });
      on.poison();
      sn.poison();
      backend().lightning_forward(p.op, q, k, v, on, &s0, &sn, nullptr);
      std::vector<double> packed_o, single_o;
      on.for_each_index([&](index_t, index_t t, index_t h, index_t d) {
        packed_o.push_back(o.get(0, start + t, h, d));
        single_o.push_back(on.get(0, t, h, d));
      });
      std::vector<double> packed_s, single_s;
      sn.for_each_index([&](index_t, index_t h, index_t a, index_t b) {
        packed_s.push_back(sT.get(static_cast<index_t>(n), h, a, b));
        single_s.push_back(sn.get(0, h, a, b));
      });
      const Verdict vo = judge(packed_o, single_o, tolerance(dt, single_o));
      const Verdict vs = judge(packed_s, single_s, tolerance(state_dtype(dt), single_s));
      INFO("sequence " << n << " output: " << vo.str() << " state: " << vs.str());
      CHECK(vo.ok);
      CHECK(vs.ok);
      start += L;
    }
  }
}

TEST_CASE("lightning forward: independent of the chunk size", "[lightning][forward][invariant]") {
  if (!backend().honours_chunk()) SUCCEED("the backend picks its own tiles");
  else
    for (Dtype dt : backend().dtypes())
      for (index_t chunk : {1, 7, 16, 64, 100, 256}) {
        LightningCase c = make(1, 517, 2, 48, 40, DecayKind::mixed, true);
        c.chunk = chunk;
        check_forward(c, dt);
      }
}

TEST_CASE("lightning forward: T = 0 leaves the state unchanged", "[lightning][forward]") {
  for (Dtype dt : backend().dtypes()) {
    const LightningProblemData p(make(2, 0, 2, 16, 16, DecayKind::mixed, true), dt, fresh_seed());
    Tensor o = p.output(), sT = p.state_output();
    backend().lightning_forward(p.op, p.q, p.k, p.v, o, p.initial(), &sT, nullptr);
    CHECK(sT.to_double() == p.s0.to_double());
  }
}

TEST_CASE("lightning decode: prefill then steps equals one call", "[lightning][step][invariant]") {
  for (Dtype dt : backend().dtypes())
    for (index_t tokens_per_step : {1, 3}) {
      const index_t B = 3, T0 = 70, n = 9, H = 2, K = 64, V = 48;
      const std::uint64_t seed = fresh_seed();
      INFO(name(dt) << " tokens_per_step=" << tokens_per_step << " seed=" << seed);
      const LightningProblemData p(make(B, T0 + n, H, K, V, DecayKind::mixed, true), dt, seed);
      std::vector<double> ro, rs;
      p.reference(ro, rs);
      // Prefill the first T0 tokens.
      Tensor q(dt, {B, T0, H, K}), k(dt, {B, T0, H, K}), v(dt, {B, T0, H, V}), o(dt, {B, T0, H, V});
      q.for_each_index([&](index_t b, index_t t, index_t h, index_t d) {
        q.set(b, t, h, d, p.q.get(b, t, h, d));
        k.set(b, t, h, d, p.k.get(b, t, h, d));
      });
      v.for_each_index([&](index_t b, index_t t, index_t h, index_t d) { v.set(b, t, h, d, p.v.get(b, t, h, d)); });
      o.poison();
      Tensor state = p.state_output();
      backend().lightning_forward(p.op, q, k, v, o, &p.s0, &state, nullptr);
      // Then decode the rest, a few tokens per step, in place.
      std::vector<double> decoded(B * n * H * V);
      for (index_t t = T0; t < T0 + n; t += tokens_per_step) {
        const index_t m = std::min(tokens_per_step, T0 + n - t);
        Tensor qs(dt, {B, m, H, K}), ks(dt, {B, m, H, K}), vs(dt, {B, m, H, V}), os(dt, {B, m, H, V});
        qs.for_each_index([&](index_t b, index_t i, index_t h, index_t d) {
          qs.set(b, i, h, d, p.q.get(b, t + i, h, d));
          ks.set(b, i, h, d, p.k.get(b, t + i, h, d));
        });
        vs.for_each_index(
            [&](index_t b, index_t i, index_t h, index_t d) { vs.set(b, i, h, d, p.v.get(b, t + i, h, d)); });
        os.poison();
        backend().lightning_step(p.op, qs, ks, vs, os, state);
        os.for_each_index([&](index_t b, index_t i, index_t h, index_t d) {
          decoded[((b * n + (t - T0 + i)) * H + h) * V + d] = os.get(b, i, h, d);
        });
      }
      std::vector<double> expected;
      for (index_t b = 0; b < B; ++b)
        for (index_t t = T0; t < T0 + n; ++t)
          for (index_t h = 0; h < H; ++h)
            for (index_t d = 0; d < V; ++d) expected.push_back(ro[((b * (T0 + n) + t) * H + h) * V + d]);
      const Verdict vo = judge(decoded, expected, tolerance(dt, expected));
      INFO("decoded outputs: " << vo.str());
      CHECK(vo.ok);
      const Verdict vs = judge(state.to_double(), rs, tolerance(state_dtype(dt), rs));
      INFO("state after decoding: " << vs.str());
      CHECK(vs.ok);
    }
}

TEST_CASE("lightning decode: many sequences, one token", "[lightning][step]") {
  for (Dtype dt : backend().dtypes()) {
    const std::uint64_t seed = fresh_seed();
    INFO(name(dt) << " seed=" << seed);
    // 520 (sequence, head) pairs: more than the CTAs a GPU holds at once.
    const LightningProblemData p(make(130, 1, 4, 128, 64, DecayKind::retnet, true), dt, seed);
    std::vector<double> ro, rs;
    p.reference(ro, rs);
    Tensor o = p.output(), state = p.state_output();
    state.assign(p.s0d);
    backend().lightning_step(p.op, p.q, p.k, p.v, o, state);
    const Verdict vo = judge(o.to_double(), ro, tolerance(dt, ro));
    INFO(vo.str());
    CHECK(vo.ok);
    const Verdict vs = judge(state.to_double(), rs, tolerance(state_dtype(dt), rs));
    INFO(vs.str());
    CHECK(vs.ok);
  }
}

TEST_CASE("lightning forward: fast precision stays within bf16 rounding", "[lightning][forward][precision]") {
  // Precision::fast rounds the state and the decayed keys to bf16 once on tensor-core backends:
  // judged against twice the bf16 yardstick whatever the input type. CPU backends ignore it.
  for (Dtype dt : backend().dtypes())
    for (bool state : {false, true}) {
      const std::uint64_t seed = fresh_seed();
      LightningCase c = make(2, 700, 3, 128, 128, DecayKind::weak, state);
      INFO(backend().name() << " " << name(dt) << " " << c.str() << " seed=" << seed);
      LightningProblemData p(c, dt, seed);
      p.op.precision = LightningAttention::Precision::fast;
      Tensor o = p.output(), sT = p.state_output();
      backend().lightning_forward(p.op, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
      std::vector<double> ro, rs;
      p.reference(ro, rs);
      const Verdict vo = judge(o.to_double(), ro, tolerance(Dtype::bf16, ro, 2.0));
      INFO("output: " << vo.str());
      CHECK(vo.ok);
      const Verdict vs = judge(sT.to_double(), rs, {1e-2, 1e-1});
      INFO("final state: " << vs.str());
      CHECK(vs.ok);
    }
}
