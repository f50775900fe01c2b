// The gated recurrences' backward on the backend under test, against the float64 reference backward
// (the EOS mapping), and the gate gradient against finite differences on tiny float64 shapes.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "suite/gated_problem.hpp"
#include "suite/seeds.hpp"

using namespace lcsm;
using namespace lcsm::test;

namespace {

const GateKind kGates[] = {GateKind::scalar, GateKind::vector};

GatedOps* ops() {
  GatedOps* g = backend().gated();
  if (!g) WARN(backend().name() << " has no gated operators yet: nothing checked");
  return g;
}

// Whether the backend's backward serves gate kind g (WARNs once per test case where not).
bool has_backward(GateKind g) {
  if (ops()->has_backward(g)) return true;
  WARN(backend().name() << " has no " << name(g) << "-gate backward yet: nothing checked for it");
  return false;
}

struct Reference {
  std::vector<double> dq, dk, dv, ds0, dg, sT;
};

Reference reference_backward(const GatedProblemData& p, const std::vector<double>& dod,
                             const std::vector<double>& dsTd) {
  const GatedCase& c = p.c;
  const index_t N = c.sequences();
  Reference r;
  r.dq.resize(p.qd.size());
  r.dk.resize(p.kd.size());
  r.dv.resize(p.vd.size());
  r.ds0.resize(N * c.H * c.K * c.V);
  auto mut = [&](std::vector<double>& x, index_t D) { return lcsm::view(x.data(), {c.B, c.T, c.H, D}); };
  p.with_reference_op([&](const auto& op) {
    r.dg =
        reference::gated_backward(op, p.dview(p.qd, c.K), p.dview(p.kd, c.K), p.dview(p.vd, c.V), p.dview(dod, c.V),
                                  mut(r.dq, c.K), mut(r.dk, c.K), mut(r.dv, c.V), p.s0_view(),
                                  c.with_state ? lcsm::view(dsTd.data(), {N, c.H, c.K, c.V}) : View<const double, 4>{},
                                  lcsm::view(r.ds0.data(), {N, c.H, c.K, c.V}), p.cu_view())
            .d_log_gate;
  });
  std::vector<double> o;
  p.reference(o, r.sT);
  return r;
}

// every_output = false: only dq, dk, dv are asked for (no initial-state or decay gradient: the
// backends' paths that skip them).
void check_backward(const GatedCase& c, Dtype dtype, bool every_output = true) {
  const std::uint64_t seed = fresh_seed();
  INFO(backend().name() << " " << name(dtype) << " " << c.str() << " seed=" << seed);
  const GatedProblemData p(c, dtype, seed);
  std::mt19937_64 rng(seed ^ 0xD1B54A32D192ED03ull);
  Tensor d_o = p.output();
  const std::vector<double> dod = normal_values(rng, d_o.numel(), dtype);
  d_o.assign(dod);
  Tensor dsT = p.state_output();
  std::vector<double> dsTd;
  if (c.with_state) {
    dsTd = normal_values(rng, dsT.numel(), state_dtype(dtype));
    dsT.assign(dsTd);
  }
  const Reference ref = reference_backward(p, dod, dsTd);
  Tensor dq = p.key_output(), dk = p.key_output(), dv = p.output(), ds0 = p.state_output(), dg = p.gate_output();
  ops()->backward(p.spec, p.gate, p.q, p.k, p.v, d_o, p.initial(), c.with_state ? &dsT : nullptr,
                  {&dq, &dk, &dv, every_output ? &ds0 : nullptr, every_output ? &dg : nullptr}, p.offsets());
  const struct {
    const char* what;
    std::vector<double> got;
    const std::vector<double>& want;
    Dtype dt;
  } checks[] = {{"dq", dq.to_double(), ref.dq, dtype},
                {"dk", dk.to_double(), ref.dk, dtype},
                {"dv", dv.to_double(), ref.dv, dtype},
                {"d_initial_state", ds0.to_double(), ref.ds0, state_dtype(dtype)}};
  // As in the lightning backward test: a backend whose products carry a relative error is held to it
  // times the magnitude of the terms where an output is a cancelled sum (a row at T = 1 is one).
  const TermMagnitudes terms = term_magnitudes(p, dod, dsTd);
  const std::vector<double>* magnitudes[] = {&terms.dq, &terms.dk, &terms.dv, &terms.ds0};
  const double per_product = backend().product_error();
  int which = 0;
  for (const auto& ch : checks) {
    const std::vector<double>& m = *magnitudes[which++];
    if (!every_output && std::string(ch.what) == "d_initial_state") continue;
    const Verdict v = judge(ch.got, ch.want, tolerance(ch.dt, ch.want, 2.0));
    bool within_terms = per_product > 0 && ch.dt == Dtype::f32;
    for (std::size_t i = 0; within_terms && i < ch.got.size(); ++i)
      within_terms = std::fabs(ch.got[i] - ch.want[i]) <= 8 * per_product * m[i] + 1e-7 * std::fabs(ch.want[i]);
    INFO(ch.what << ": " << v.str() << (within_terms ? " (within the products' error of its terms)" : ""));
    CHECK((v.ok || within_terms));
  }
  if (!every_output) return;
  // dg_t sums terms of both signs: its error is judged against the magnitude of those terms, not
  // against the (possibly cancelled) sum (gate_gradient_terms).
  const index_t W = c.gate_width();
  const std::vector<double> got = dg.to_double(), mag = gate_gradient_terms(p, terms, dsTd, ref.sT);
  const double unit = dtype == Dtype::f64 ? 1e-12 : std::max(2e-5, backend().product_error());
  index_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - ref.dg[i]);
    if (!(err <= unit * (mag[i] + std::fabs(ref.dg[i])) + 1e-300) && bad++ == 0) {
      const index_t e = static_cast<index_t>(i);
      first = "d_log_gate at token " + std::to_string(e / W / c.H % c.T) + " head " + std::to_string(e / W % c.H) +
              " key " + std::to_string(e % W) + ": " + std::to_string(got[i]) + " vs reference " +
              std::to_string(ref.dg[i]) + ", term magnitude " + std::to_string(mag[i]);
    }
  }
  INFO(bad << " gate gradients out of tolerance; first: " << first);
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("gated backward: shapes, gates and states", "[gated][backward]") {
  if (!ops() || !backend().has_backward()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      if (!has_backward(g)) break;
      for (index_t T : {1, 63, 64, 65, 200})
        for (bool state : {false, true}) check_backward(gated_case(g, 2, T, 2, 32, 32, GateStrength::mixed, state), dt);
      for (GateStrength s : {GateStrength::none, GateStrength::weak, GateStrength::strong, GateStrength::floor})
        check_backward(gated_case(g, 1, 150, 3, 48, 40, s, true), dt);
      // A few tokens at g = -20: d_initial_state is e^{-20 T} times O(1), all of it through the state
      // decay of one block (a float 1 + expm1(-20) is 0).
      for (index_t T : {1, 2, 3}) check_backward(gated_case(g, 1, T, 2, 16, 16, GateStrength::strong, true), dt);
      check_backward(gated_case(g, 1, 1000, 1, 64, 64, GateStrength::weak, true), dt);   // one head: segments
      check_backward(gated_case(g, 1, 1000, 1, 32, 32, GateStrength::mixed, true), dt);  // one head: segments
      // The CUDA decay gradient's sums cut into slices of about 512 tokens.
      check_backward(gated_case(g, 1, 1600, 1, 32, 32, GateStrength::mixed, true), dt);
      check_backward(gated_case(g, 1, 130, 2, 100, 60, GateStrength::mixed, true), dt);
      check_backward(gated_case(g, 1, 70, 1, 136, 200, GateStrength::mixed, true), dt);        // K, V > 128
      check_backward(gated_case(g, 1, 200, 11, 32, 32, GateStrength::mixed, true), dt);        // groups of heads
      check_backward(gated_case(g, 2, 130, 2, 32, 48, GateStrength::mixed, true), dt, false);  // dq, dk, dv only
    }
}

TEST_CASE("gated backward: the scale", "[gated][backward][scale]") {
  if (!ops() || !backend().has_backward()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (double scale : {1.0, 0.37}) {
        if (!has_backward(g)) break;
        GatedCase c = gated_case(g, 1, 200, 2, 32, 24, GateStrength::mixed, true);
        c.scale = scale;
        check_backward(c, dt);
        c.H = 1;  // one head: cut into segments on the CPU
        check_backward(c, dt);
      }
  // scale = 0: o = 0, yet dk, dv and the initial state's gradient carry the final state's (weak
  // gates over few tokens, so that the decayed gradient stays well inside float's range).
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      if (!has_backward(g)) break;
      GatedCase c = gated_case(g, 1, 40, 2, 32, 24, GateStrength::weak, true);
      c.scale = 0.0;
      check_backward(c, dt);
    }
}

TEST_CASE("gated backward: varlen and strided memory", "[gated][backward][varlen]") {
  if (!ops() || !backend().has_backward()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes()) {
      if (!has_backward(g)) break;
      check_backward(gated_varlen_case(g, {1, 63, 300, 64}, 2, 32, 32, GateStrength::mixed, true), dt);
      check_backward(gated_varlen_case(g, {50, 0, 80}, 1, 16, 24, GateStrength::weak, false, true), dt);
      check_backward(gated_varlen_case(g, {700, 900}, 1, 16, 16, GateStrength::mixed, true), dt);  // segments
      GatedCase c = gated_case(g, 2, 90, 2, 32, 32, GateStrength::mixed, true);
      c.strided = true;
      check_backward(c, dt);
    }
}

TEST_CASE("gated backward: independent of the chunk size", "[gated][backward][invariant]") {
  if (!ops() || !backend().has_backward() || !backend().honours_chunk()) return;
  for (GateKind g : kGates)
    for (Dtype dt : backend().dtypes())
      for (index_t chunk : {1, 16, 64, 100}) {
        GatedCase c = gated_case(g, 1, 257, 2, 32, 32, GateStrength::mixed, true);
        c.chunk = chunk;
        c.sub_chunk = std::min<index_t>(chunk, 16);
        check_backward(c, dt);
      }
  for (Dtype dt : backend().dtypes())
    for (index_t sub : {1, 5, 64}) {
      GatedCase c = gated_case(GateKind::vector, 1, 200, 2, 24, 16, GateStrength::mixed, true);
      c.sub_chunk = sub;
      check_backward(c, dt);
    }
}

// L = <w, o> + <w_s, final state> on tiny float64 shapes: the backend's d_log_gate against central
// differences of the reference forward (step 1e-6, error O(h^2)). Blocks of 4 in sub-chunks of 2,
// and blocks of 16 in sub-chunks of 6 (6, 6, 4: running products over several tokens inside a
// sub-chunk, a partial last one, and partial last blocks).
TEST_CASE("gated backward: the gate gradient agrees with finite differences", "[gated][backward]") {
  if (!ops() || !backend().has_backward()) return;
  const std::vector<Dtype> dtypes = backend().dtypes();
  if (std::find(dtypes.begin(), dtypes.end(), Dtype::f64) == dtypes.end()) {
    WARN(backend().name() << " has no float64 inputs: its gate gradient is checked against the reference only");
    return;
  }
  const struct {
    index_t chunk, sub, T;
    std::vector<index_t> lengths;
  } shapes[] = {{4, 2, 7, {3, 0, 9}}, {16, 6, 37, {5, 0, 31}}};
  for (GateKind g : kGates)
    for (const auto& sh : shapes)
      for (bool varlen : {false, true}) {
        if (!has_backward(g)) break;
        const std::uint64_t seed = fresh_seed();
        INFO(name(g) << " chunk=" << sh.chunk << " sub_chunk=" << sh.sub << " varlen=" << varlen << " seed=" << seed);
        GatedCase c = varlen ? gated_varlen_case(g, sh.lengths, 2, 3, 2, GateStrength::mixed, true)
                             : gated_case(g, 2, sh.T, 2, 3, 2, GateStrength::mixed, true);
        c.chunk = sh.chunk;
        c.sub_chunk = sh.sub;
        GatedProblemData p(c, Dtype::f64, seed);
        std::uniform_real_distribution<double> u(-1.5, -0.05);
        std::mt19937_64 rng(seed + 1);
        for (auto& x : p.gd) x = u(rng);
        p.gate.assign(p.gd);
        Tensor w = p.output(), ws = p.state_output();
        const auto wd = normal_values(rng, w.numel(), Dtype::f64), wsd = normal_values(rng, ws.numel(), Dtype::f64);
        w.assign(wd);
        ws.assign(wsd);
        Tensor dq = p.key_output(), dk = p.key_output(), dv = p.output(), ds0 = p.state_output(), dg = p.gate_output();
        ops()->backward(p.spec, p.gate, p.q, p.k, p.v, w, p.initial(), &ws, {&dq, &dk, &dv, &ds0, &dg}, p.offsets());
        auto loss = [&] {
          std::vector<double> o, sT;
          p.reference(o, sT);
          double l = 0;
          for (std::size_t i = 0; i < o.size(); ++i) l += wd[i] * o[i];
          for (std::size_t i = 0; i < sT.size(); ++i) l += wsd[i] * sT[i];
          return l;
        };
        std::vector<double> numeric(p.gd.size());
        for (std::size_t i = 0; i < p.gd.size(); ++i) {
          const double keep = p.gd[i], h = 1e-6;
          p.gd[i] = keep + h;
          const double up = loss();
          p.gd[i] = keep - h;
          const double down = loss();
          p.gd[i] = keep;
          numeric[i] = (up - down) / (2 * h);
        }
        const Verdict v = judge(dg.to_double(), numeric, {1e-7, 1e-6});
        INFO("d_log_gate: " << v.str());
        CHECK(v.ok);
      }
}
