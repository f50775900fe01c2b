// The gated recurrences' forward and decode on the backend under test, against the float64
// reference (the EOS mapping in both orders, and the operators' own quadratic formula). Every case
// runs for both gates and every dtype; outputs are poisoned with NaN before each call.
#include <catch2/catch.hpp>

#include "suite/gated_problem.hpp"
#include "suite/lightning_problem.hpp"
#include "suite/seeds.hpp"

using namespace lcsm;
using namespace lcsm::test;
using Order = GatedProblemData::Order;

namespace {

const GateKind kGates[] = {GateKind::scalar, GateKind::vector};

GatedOps* ops() {
  GatedOps* g = backend().gated();
  if (!g) WARN(backend().name() << " has no gated operators yet: nothing checked");
  return g;
}

void check_forward(const GatedCase& c, Dtype dtype, Order order = Order::recurrent, double slack = 1.0) {
  const std::uint64_t seed = fresh_seed();
  INFO(backend().name() << " " << name(dtype) << " " << c.str() << " seed=" << seed);
  const GatedProblemData p(c, dtype, seed);
  Tensor o = p.output(), sT = p.state_output();
  ops()->forward(p.spec, p.gate, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
  std::vector<double> ro, rs;
  p.reference(ro, rs, order);
  const Verdict vo = judge(o.to_double(), ro, tolerance(dtype, ro, slack));
  INFO("output: " << vo.str());
  CHECK(vo.ok);
  if (order == Order::direct) return;
  const Verdict vs = judge(sT.to_double(), rs, tolerance(state_dtype(dtype), rs, slack));
  INFO("final state: " << vs.str());
  CHECK(vs.ok);
}

// Precision::fast: tensor-core backends round the state, the decayed operands and the scores to
// bf16 once; judged against twice the bf16 yardstick whatever the input type (CPU backends ignore
// it).
void check_forward_fast(const GatedCase& c, Dtype dtype) {
  const std::uint64_t seed = fresh_seed();
  INFO(backend().name() << " " << name(dtype) << " fast " << c.str() << " seed=" << seed);
  GatedProblemData p(c, dtype, seed);
  p.spec.precision = Precision::fast;
  Tensor o = p.output(), sT = p.state_output();
  ops()->forward(p.spec, p.gate, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
  std::vector<double> ro, rs;
  p.reference(ro, rs);
  const Verdict vo = judge(o.to_double(), ro, tolerance(Dtype::bf16, ro, 2.0));
  INFO("output: " << vo.str());
  CHECK(vo.ok);
  const Verdict vs = judge(sT.to_double(), rs, {1e-2, 1e-1});
  INFO("final state: " << vs.str());
  CHECK(vs.ok);
}

}  // namespace

TEST_CASE("gated forward: sequence lengths around the tile", "[gated][forward]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (index_t T : {1, 2, 63, 64, 65, 127, 200, 1000})
        for (bool state : {false, true}) check_forward(gated_case(g, 2, T, 2, 64, 64, GateStrength::mixed, state), dt);
}

TEST_CASE("gated forward: head dimensions", "[gated][forward]") {
  if (!ops()) return;
  const std::pair<index_t, index_t> dims[] = {{16, 16}, {60, 100}, {100, 60}, {128, 128}, {256, 64}, {64, 256}};
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (auto [K, V] : dims) check_forward(gated_case(g, 1, 131, 2, K, V, GateStrength::mixed, true), dt);
}

TEST_CASE("gated forward: gates from none to strong", "[gated][forward]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (GateStrength s :
           {GateStrength::none, GateStrength::weak, GateStrength::strong, GateStrength::mixed, GateStrength::floor})
        for (bool state : {false, true}) check_forward(gated_case(g, 2, 300, 3, 64, 48, s, state), dt);
}

// op.scale set: every entry point must use it, not 1/sqrt(K).
TEST_CASE("gated forward: the scale", "[gated][forward][scale]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (double scale : {1.0, 0.37}) {
        GatedCase c = gated_case(g, 2, 150, 2, 32, 24, GateStrength::mixed, true);
        c.scale = scale;
        check_forward(c, dt);
        c = gated_case(g, 1, 700, 1, 16, 16, GateStrength::weak, true);  // cut into segments on the CPU
        c.scale = scale;
        check_forward(c, dt);
      }
}

TEST_CASE("gated forward: the EOS parallel order and the direct formula agree", "[gated][forward]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (bool state : {false, true}) {
        check_forward(gated_case(g, 2, 150, 2, 24, 20, GateStrength::mixed, state), dt, Order::parallel);
        check_forward(gated_case(g, 1, 90, 2, 16, 12, GateStrength::mixed, state), dt, Order::direct);
      }
}

// The cases the issue names: g = -20 on every token over 64K tokens (e^{-G_j} would be e^{+1.3M}:
// nothing may overflow, no NaN, the outputs are the last token's own term), and weak gates over
// 64K tokens (the state sums ~1000 tokens: cancellation would show). Small heads keep it quick.
TEST_CASE("gated forward: 64K tokens, strong and weak gates", "[gated][forward][long]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (GateStrength s : {GateStrength::strong, GateStrength::weak})
        check_forward(gated_case(g, 1, 65536, 1, 16, 16, s, true), dt);
}

// Faint gates over 64K tokens (constant in time; per key from -1e-6 to -1e-4 for the vector gate):
// the state is decayed 1024 times by factors within 1e-2 of 1. A float state may gather rounding
// like the square root of the number of blocks, never linearly (a factor rounded the same way in
// every block: the vector gate's error was 3.1e-5 at 64K, the last 4K tokens 12x worse than the
// first 4K).
TEST_CASE("gated forward: faint gates over 64K tokens", "[gated][forward][long][accuracy]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      const std::uint64_t seed = fresh_seed();
      const GatedCase c = gated_case(g, 1, 65536, 1, 16, 16, GateStrength::faint, false);
      INFO(backend().name() << " " << name(dt) << " " << c.str() << " seed=" << seed);
      const GatedProblemData p(c, dt, seed);
      Tensor o = p.output(), sT = p.state_output();
      ops()->forward(p.spec, p.gate, p.q, p.k, p.v, o, nullptr, &sT, nullptr);
      std::vector<double> ro, rs;
      p.reference(ro, rs);
      const std::vector<double> got = o.to_double();
      const Verdict vo = judge(got, ro, tolerance(dt, ro));
      INFO("output: " << vo.str());
      CHECK(vo.ok);
      const Verdict vs = judge(sT.to_double(), rs, tolerance(state_dtype(dt), rs));
      INFO("final state: " << vs.str());
      CHECK(vs.ok);
      const Growth gr = error_growth(got, ro, 16, 4096);
      INFO(gr.str());
      CHECK(gr.within(6.0, 1e-7));
    }
}

TEST_CASE("gated forward: long sequence, K = V = 128", "[gated][forward][long]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      check_forward(gated_case(g, 1, 4097, 2, 128, 128, GateStrength::mixed, true), dt);
}

TEST_CASE("gated forward: [B, H, T, D] memory through strides", "[gated][forward]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      GatedCase c = gated_case(g, 2, 150, 3, 64, 32, GateStrength::mixed, true);
      c.strided = true;
      check_forward(c, dt);
    }
}

TEST_CASE("gated forward: more heads than threads and one head alone", "[gated][forward]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      check_forward(gated_case(g, 3, 333, 5, 32, 48, GateStrength::mixed, true), dt);
      check_forward(gated_case(g, 1, 300, 16, 32, 32, GateStrength::strong, true), dt);  // CPU: groups of heads
      check_forward(gated_case(g, 1, 2000, 1, 64, 64, GateStrength::weak, true), dt);    // CPU: cut into segments
      check_forward(gated_case(g, 1, 2000, 1, 32, 32, GateStrength::mixed, true), dt);
    }
}

TEST_CASE("gated forward: varlen with per-sequence states", "[gated][forward][varlen]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (bool state : {false, true})
        for (bool i64 : {false, true}) {
          check_forward(gated_varlen_case(g, {1, 63, 700, 64}, 2, 32, 32, GateStrength::mixed, state, i64), dt);
          check_forward(gated_varlen_case(g, {129, 0, 5, 1}, 3, 16, 24, GateStrength::weak, state, i64), dt);
        }
}

TEST_CASE("gated forward: varlen equals separate calls", "[gated][forward][varlen][invariant]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      const std::vector<index_t> lengths{100, 1, 65, 300};
      const GatedCase packed = gated_varlen_case(g, lengths, 2, 32, 24, GateStrength::mixed, true);
      const std::uint64_t seed = fresh_seed();
      INFO(name(g) << " " << name(dt) << " seed=" << seed);
      const GatedProblemData p(packed, dt, seed);
      Tensor o = p.output(), sT = p.state_output();
      ops()->forward(p.spec, p.gate, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
      const index_t H = 2, K = 32, V = 24, W = packed.gate_width();
      index_t start = 0;
      for (std::size_t n = 0; n < lengths.size(); ++n) {
        const index_t L = lengths[n];
        Tensor q(dt, {1, L, H, K}), k(dt, {1, L, H, K}), v(dt, {1, L, H, V}), on(dt, {1, L, H, V});
        Tensor gn(state_dtype(dt), {1, L, H, W});
        Tensor s0(state_dtype(dt), {1, H, K, V}), sn(state_dtype(dt), {1, H, K, V});
        q.for_each_index([&](index_t, index_t t, index_t h, index_t d) {
          q.set(0, t, h, d, p.q.get(0, start + t, h, d));
          k.set(0, t, h, d, p.k.get(0, start + t, h, d));
        });
        v.for_each_index(
            [&](index_t, index_t t, index_t h, index_t d) { v.set(0, t, h, d, p.v.get(0, start + t, h, d)); });
        gn.for_each_index(
            [&](index_t, index_t t, index_t h, index_t d) { gn.set(0, t, h, d, p.gate.get(0, start + t, h, d)); });
        s0.for_each_index([&](index_t, index_t h, index_t a, index_t b) {
          s0.set(0, h, a, b, p.s0.get(static_cast<index_t>(n), h, a, b));
        });
        on.poison();
        sn.poison();
        ops()->forward(p.spec, gn, q, k, v, on, &s0, &sn, nullptr);
        std::vector<double> packed_o, single_o, packed_s, single_s;
        on.for_each_index([&](index_t, index_t t, index_t h, index_t d) {
          packed_o.push_back(o.get(0, start + t, h, d));
          single_o.push_back(on.get(0, t, h, d));
        });
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

TEST_CASE("gated forward: independent of the chunk size", "[gated][forward][invariant]") {
  if (!ops()) return;
  if (!backend().honours_chunk()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (index_t chunk : {1, 7, 16, 64, 100, 256}) {
        GatedCase c = gated_case(g, 1, 517, 2, 48, 40, GateStrength::mixed, true);
        c.chunk = chunk;
        c.sub_chunk = std::min<index_t>(16, chunk);
        check_forward(c, dt);
      }
  for (Dtype dt : backend().dtypes())
    for (index_t sub : {1, 5, 16, 64}) {
      GatedCase c = gated_case(GateKind::vector, 1, 300, 2, 40, 24, GateStrength::mixed, true);
      c.sub_chunk = sub;
      check_forward(c, dt);
    }
}

TEST_CASE("gated forward: T = 0 leaves the state unchanged", "[gated][forward]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      const GatedProblemData p(gated_case(g, 2, 0, 2, 16, 16, GateStrength::mixed, true), dt, fresh_seed());
      Tensor o = p.output(), sT = p.state_output();
      ops()->forward(p.spec, p.gate, p.q, p.k, p.v, o, p.initial(), &sT, nullptr);
      CHECK(sT.to_double() == p.s0.to_double());
    }
}

// A scalar gate constant in time is lightning attention's per-head decay.
TEST_CASE("gated forward: a constant scalar gate equals lightning attention", "[gated][forward][lightning]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes()) {
    const std::uint64_t seed = fresh_seed();
    INFO(name(dt) << " seed=" << seed);
    GatedCase c = gated_case(GateKind::scalar, 2, 300, 4, 64, 32, GateStrength::none, true);
    GatedProblemData p(c, dt, seed);
    LightningAttention light;
    light.log_decay = decay::alibi(4);
    p.gate.for_each_index(
        [&](index_t b, index_t t, index_t h, index_t d) { p.gate.set(b, t, h, d, light.log_decay[h]); });
    for (auto& x : light.log_decay) x = round_to(state_dtype(dt), x);  // the gate is rounded to the state type
    Tensor o = p.output(), sT = p.state_output(), lo = p.output(), lsT = p.state_output();
    ops()->forward(p.spec, p.gate, p.q, p.k, p.v, o, p.initial(), &sT, nullptr);
    backend().lightning_forward(light, p.q, p.k, p.v, lo, p.initial(), &lsT, nullptr);
    const std::vector<double> lod = lo.to_double(), lsd = lsT.to_double();
    const Verdict vo = judge(o.to_double(), lod, tolerance(dt, lod));
    const Verdict vs = judge(sT.to_double(), lsd, tolerance(state_dtype(dt), lsd));
    INFO("output: " << vo.str() << " | state: " << vs.str());
    CHECK(vo.ok);
    CHECK(vs.ok);
  }
}

TEST_CASE("gated decode: prefill then steps equals one call", "[gated][step][invariant]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (index_t per_step : {1, 3}) {
        const index_t B = 3, T0 = 70, n = 9, H = 2, K = 64, V = 48;
        const std::uint64_t seed = fresh_seed();
        INFO(name(g) << " " << name(dt) << " tokens_per_step=" << per_step << " seed=" << seed);
        const GatedProblemData p(gated_case(g, B, T0 + n, H, K, V, GateStrength::mixed, true), dt, seed);
        std::vector<double> ro, rs;
        p.reference(ro, rs);
        auto slice = [&](const Tensor& x, Dtype d, index_t t0, index_t len) {
          Tensor out(d, {x.size(0), len, x.size(2), x.size(3)});
          out.for_each_index(
              [&](index_t b, index_t t, index_t h, index_t e) { out.set(b, t, h, e, x.get(b, t0 + t, h, e)); });
          return out;
        };
        Tensor o(dt, {B, T0, H, V});
        o.poison();
        Tensor state = p.state_output();
        ops()->forward(p.spec, slice(p.gate, state_dtype(dt), 0, T0), slice(p.q, dt, 0, T0), slice(p.k, dt, 0, T0),
                       slice(p.v, dt, 0, T0), o, &p.s0, &state, nullptr);
        std::vector<double> decoded(B * n * H * V);
        for (index_t t = T0; t < T0 + n; t += per_step) {
          const index_t m = std::min(per_step, T0 + n - t);
          Tensor os(dt, {B, m, H, V});
          os.poison();
          ops()->step(p.spec, slice(p.gate, state_dtype(dt), t, m), slice(p.q, dt, t, m), slice(p.k, dt, t, m),
                      slice(p.v, dt, t, m), os, state);
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

TEST_CASE("gated decode: many sequences, one token", "[gated][step]") {
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (std::optional<double> scale : {std::optional<double>{}, std::optional<double>{0.37}}) {
        const std::uint64_t seed = fresh_seed();
        // 520 (sequence, head) pairs: more than the CTAs a GPU holds at once.
        GatedCase c = gated_case(g, 130, 1, 4, 128, 64, GateStrength::mixed, true);
        c.scale = scale;
        INFO(name(dt) << " " << c.str() << " seed=" << seed);
        const GatedProblemData p(c, dt, seed);
        std::vector<double> ro, rs;
        p.reference(ro, rs);
        Tensor o = p.output(), state = p.state_output();
        state.assign(p.s0d);
        ops()->step(p.spec, p.gate, p.q, p.k, p.v, o, state);
        const Verdict vo = judge(o.to_double(), ro, tolerance(dt, ro));
        INFO(vo.str());
        CHECK(vo.ok);
        const Verdict vs = judge(state.to_double(), rs, tolerance(state_dtype(dt), rs));
        INFO(vs.str());
        CHECK(vs.ok);
      }
}

TEST_CASE("gated forward: K = V = 128, gentle chunks and steep ones", "[gated][forward]") {
  // Tensor-core backends may run chunks whose cumulative gates stay small on a separable path and
  // hand the others to another (cuda: the vector gate's sm_90a kernel and its fallback): no, weak
  // and sparse gates (a strong token now and then: some segments change path midway), cut and
  // uncut sequences, partial chunks, varlen; both precisions.
  if (!ops()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      for (GateStrength s : {GateStrength::none, GateStrength::weak, GateStrength::sparse}) {
        check_forward(gated_case(g, 1, 2049, 2, 128, 128, s, s == GateStrength::sparse), dt);
        check_forward(gated_case(g, 2, 700, 1, 128, 64, s, s != GateStrength::none), dt);
      }
      check_forward(gated_varlen_case(g, {1, 63, 1500, 64, 130}, 2, 128, 128, GateStrength::sparse, true), dt);
      check_forward_fast(gated_case(g, 1, 3000, 2, 128, 128, GateStrength::sparse, true), dt);
    }
}

TEST_CASE("gated forward: fast precision stays within bf16 rounding", "[gated][forward][precision]") {
  if (!ops()) return;  // check_forward_fast says how it is judged
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (bool state : {false, true})
        check_forward_fast(gated_case(g, 2, 700, 3, 128, 128, GateStrength::weak, state), dt);
}
