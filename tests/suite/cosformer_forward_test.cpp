// cosFormer forward and decode on the backend under test, against the float64 references (the EOS
// mapping and the direct quadratic formula). Outputs and states are poisoned with NaN before each call.
#include <catch2/catch.hpp>

#include "suite/cosformer_problem.hpp"
#include "suite/seeds.hpp"

using namespace lcsm;
using namespace lcsm::test;

namespace {

// Null (with a warning) where the backend has no cosFormer yet.
CosformerOps* ops() {
  CosformerOps* o = backend().cosformer();
  if (!o) WARN("backend " << backend().name() << " has no cosFormer: nothing checked");
  return o;
}

// Runs one case and checks output and final state against the EOS reference, and the output
// against the direct formula where that is cheap enough.
void check_forward(CosformerOps& ops, const CosformerCase& c, Dtype dtype) {
  const std::uint64_t seed = fresh_seed();
  INFO(backend().name() << " " << name(dtype) << " " << c.str() << " seed=" << seed);
  const CosformerProblemData p(c, dtype, seed);
  Tensor o = p.output(), sT = p.state_output();
  ops.forward(p.op, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
  std::vector<double> ro, rs;
  p.reference(ro, rs);
  const Verdict vo = judge(o.to_double(), ro, tolerance(dtype, ro));
  INFO("output vs EOS reference: " << vo.str());
  CHECK(vo.ok);
  const Verdict vs = judge(sT.to_double(), rs, tolerance(state_dtype(dtype), rs));
  INFO("final state: " << vs.str());
  CHECK(vs.ok);
  if (c.T <= 1000) {
    const std::vector<double> direct = p.direct();
    const Verdict vd = judge(o.to_double(), direct, tolerance(dtype, direct));
    INFO("output vs direct formula: " << vd.str());
    CHECK(vd.ok);
  }
}

}  // namespace

TEST_CASE("cosformer reference: the EOS mapping equals the direct formula", "[cosformer][reference]") {
  for (bool causal : {true, false})
    for (CosMap map : {CosMap::relu, CosMap::elu_plus_one})
      for (bool state : {false, true}) {
        CosformerCase c = cos_case(2, 37, 2, 5, 3, causal, map, state);
        if (state) c.length = 50;
        const std::uint64_t seed = fresh_seed();
        INFO(c.str() << " seed=" << seed);
        const CosformerProblemData p(c, Dtype::f64, seed);
        std::vector<double> ro, rs;
        p.reference(ro, rs);
        const Verdict v = judge(p.direct(), ro, {1e-13, 1e-12});
        INFO(v.str());
        CHECK(v.ok);
      }
}

TEST_CASE("cosformer forward: sequence lengths around the tile", "[cosformer][forward]") {
  CosformerOps* o = ops();
  if (!o) return;
  for (Dtype dt : backend().dtypes())
    for (index_t T : {1, 2, 63, 64, 65, 127, 200})
      for (bool causal : {true, false}) check_forward(*o, cos_case(2, T, 2, 64, 64, causal, CosMap::relu, T == 65), dt);
}

TEST_CASE("cosformer forward: feature maps, M and states", "[cosformer][forward]") {
  CosformerOps* o = ops();
  if (!o) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false})
      for (CosMap map : {CosMap::relu, CosMap::elu_plus_one})
        for (bool state : {false, true}) {
          CosformerCase c = cos_case(2, 150, 3, 32, 48, causal, map, state);
          check_forward(*o, c, dt);  // M = T
          c.length = 1000;           // M > T, and the batch's sequences at different positions
          c.positions = {0, 700};
          check_forward(*o, c, dt);
        }
}

TEST_CASE("cosformer forward: head dimensions", "[cosformer][forward]") {
  CosformerOps* o = ops();
  if (!o) return;
  const std::pair<index_t, index_t> dims[] = {{16, 16}, {60, 100}, {100, 60}, {64, 64}, {128, 128}, {16, 128}};
  for (Dtype dt : backend().dtypes())
    for (auto [K, V] : dims) check_forward(*o, cos_case(1, 131, 2, K, V, true, CosMap::relu, true), dt);
}

TEST_CASE("cosformer forward: long sequences, one head cut into segments", "[cosformer][forward][long]") {
  CosformerOps* o = ops();
  if (!o) return;
  for (Dtype dt : backend().dtypes()) {
    check_forward(*o, cos_case(1, 1000, 1, 64, 64, true, CosMap::relu, true), dt);
    check_forward(*o, cos_case(1, 1000, 1, 32, 32, false, CosMap::elu_plus_one, true), dt);
    check_forward(*o, cos_case(1, 4097, 2, 64, 64, true, CosMap::relu, false), dt);
  }
}

TEST_CASE("cosformer forward: [B, H, T, D] memory through strides", "[cosformer][forward]") {
  CosformerOps* o = ops();
  if (!o) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      CosformerCase c = cos_case(2, 150, 3, 64, 32, causal, CosMap::relu, true);
      c.strided = true;
      check_forward(*o, c, dt);
    }
}

TEST_CASE("cosformer forward: many heads in groups", "[cosformer][forward]") {
  CosformerOps* o = ops();
  if (!o) return;
  for (Dtype dt : backend().dtypes()) check_forward(*o, cos_case(1, 300, 16, 32, 32, true, CosMap::relu, true), dt);
}

TEST_CASE("cosformer forward: varlen with per-sequence states", "[cosformer][forward][varlen]") {
  CosformerOps* o = ops();
  if (!o) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false})
      for (bool i64 : {false, true}) {
        check_forward(*o, cos_varlen_case({1, 63, 700, 64}, 2, 32, 32, causal, true, i64), dt);
        check_forward(*o, cos_varlen_case({129, 0, 5, 1}, 3, 16, 16, causal, false, i64), dt);
      }
}

TEST_CASE("cosformer forward: varlen equals separate calls", "[cosformer][forward][varlen][invariant]") {
  CosformerOps* ops_ = ops();
  if (!ops_) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      const std::vector<index_t> lengths{100, 1, 65, 300};
      const index_t H = 2, K = 16, V = 24;
      const CosformerCase packed = cos_varlen_case(lengths, H, K, V, causal, true, dt == Dtype::f64);
      const std::uint64_t seed = fresh_seed();
      INFO(name(dt) << " " << packed.str() << " seed=" << seed);
      const CosformerProblemData p(packed, dt, seed);
      Tensor o = p.output(), sT = p.state_output();
      ops_->forward(p.op, p.q, p.k, p.v, o, p.initial(), &sT, p.offsets());
      index_t start = 0;
      for (std::size_t n = 0; n < lengths.size(); ++n) {
        const index_t L = lengths[n];
        Tensor q(dt, {1, L, H, K}), k(dt, {1, L, H, K}), v(dt, {1, L, H, V}), on(dt, {1, L, H, V});
        Tensor s0(state_dtype(dt), {1, H, 2 * K, V + 1}), sn(state_dtype(dt), {1, H, 2 * K, V + 1});
        q.for_each_index([&](index_t, index_t t, index_t h, index_t d) {
          q.set(0, t, h, d, p.q.get(0, start + t, h, d));
          k.set(0, t, h, d, p.k.get(0, start + t, h, d));
        });
        v.for_each_index(
            [&](index_t, index_t t, index_t h, index_t d) { v.set(0, t, h, d, p.v.get(0, start + t, h, d)); });
        s0.for_each_index([&](index_t, index_t h, index_t a, index_t b) {
          s0.set(0, h, a, b, p.s0.get(static_cast<index_t>(n), h, a, b));
        });
        on.poison();
        sn.poison();
        ops_->forward(p.op, q, k, v, on, &s0, &sn, nullptr);
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

TEST_CASE("cosformer forward: independent of the chunk size", "[cosformer][forward][invariant]") {
  CosformerOps* o = ops();
  if (!o) return;
  if (!backend().honours_chunk()) return;
  for (Dtype dt : backend().dtypes())
    for (index_t chunk : {1, 7, 16, 64, 100, 256}) {
      CosformerCase c = cos_case(1, 517, 2, 48, 40, true, CosMap::elu_plus_one, true);
      c.chunk = chunk;
      check_forward(*o, c, dt);
    }
}

TEST_CASE("cosformer forward: T = 0 leaves the state unchanged", "[cosformer][forward]") {
  CosformerOps* o = ops();
  if (!o) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      const CosformerProblemData p(cos_case(2, 0, 2, 16, 16, causal, CosMap::relu, true), dt, fresh_seed());
      Tensor out = p.output(), sT = p.state_output();
      o->forward(p.op, p.q, p.k, p.v, out, p.initial(), &sT, nullptr);
      CHECK(sT.to_double() == p.s0.to_double());
    }
}

TEST_CASE("cosformer decode: prefill then steps equals one call", "[cosformer][step][invariant]") {
  CosformerOps* ops_ = ops();
  if (!ops_) return;
  for (Dtype dt : backend().dtypes())
    for (index_t tokens_per_step : {1, 3}) {
      const index_t B = 3, T0 = 70, n = 9, H = 2, K = 64, V = 48;
      CosformerCase c = cos_case(B, T0 + n, H, K, V, true, CosMap::relu, true);
      c.length = T0 + n + 5;  // M fixed in advance
      const std::uint64_t seed = fresh_seed();
      INFO(name(dt) << " tokens_per_step=" << tokens_per_step << " " << c.str() << " seed=" << seed);
      const CosformerProblemData p(c, dt, seed);
      std::vector<double> ro, rs;
      p.reference(ro, rs);
      Tensor q(dt, {B, T0, H, K}), k(dt, {B, T0, H, K}), v(dt, {B, T0, H, V}), o(dt, {B, T0, H, V});
      q.for_each_index([&](index_t b, index_t t, index_t h, index_t d) {
        q.set(b, t, h, d, p.q.get(b, t, h, d));
        k.set(b, t, h, d, p.k.get(b, t, h, d));
      });
      v.for_each_index([&](index_t b, index_t t, index_t h, index_t d) { v.set(b, t, h, d, p.v.get(b, t, h, d)); });
      o.poison();
      Tensor state = p.state_output();
      ops_->forward(p.op, q, k, v, o, &p.s0, &state, nullptr);
      std::vector<double> decoded(B * n * H * V);
      CosFormerAttention op = p.op;
      std::vector<index_t> positions(B);
      op.positions = lcsm::view(static_cast<const index_t*>(positions.data()), {B});
      for (index_t t = T0; t < T0 + n; t += tokens_per_step) {
        const index_t m = std::min(tokens_per_step, T0 + n - t);
        std::fill(positions.begin(), positions.end(), t);
        Tensor qs(dt, {B, m, H, K}), ks(dt, {B, m, H, K}), vs(dt, {B, m, H, V}), os(dt, {B, m, H, V});
        qs.for_each_index([&](index_t b, index_t i, index_t h, index_t d) {
          qs.set(b, i, h, d, p.q.get(b, t + i, h, d));
          ks.set(b, i, h, d, p.k.get(b, t + i, h, d));
        });
        vs.for_each_index(
            [&](index_t b, index_t i, index_t h, index_t d) { vs.set(b, i, h, d, p.v.get(b, t + i, h, d)); });
        os.poison();
        ops_->step(op, qs, ks, vs, os, state);
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

TEST_CASE("cosformer decode: many sequences at their own positions", "[cosformer][step]") {
  CosformerOps* ops_ = ops();
  if (!ops_) return;
  for (Dtype dt : backend().dtypes())
    for (CosMap map : {CosMap::relu, CosMap::elu_plus_one}) {
      CosformerCase c = cos_case(17, 2, 3, 128, 64, true, map, true);
      c.length = 4000;
      for (index_t b = 0; b < c.B; ++b) c.positions.push_back(b * 200 + 3);
      const std::uint64_t seed = fresh_seed();
      INFO(name(dt) << " " << c.str() << " seed=" << seed);
      const CosformerProblemData p(c, dt, seed);
      std::vector<double> ro, rs;
      p.reference(ro, rs);
      Tensor o = p.output(), state = p.state_output();
      state.assign(p.s0d);
      ops_->step(p.op, p.q, p.k, p.v, o, state);
      const Verdict vo = judge(o.to_double(), ro, tolerance(dt, ro));
      INFO(vo.str());
      CHECK(vo.ok);
      const Verdict vs = judge(state.to_double(), rs, tolerance(state_dtype(dt), rs));
      INFO(vs.str());
      CHECK(vs.ok);
    }
}

// op.eps large enough that the clamp max(den, eps) is active on many rows (the first tokens of a
// sequence, small features), forward and decode, both feature maps, causal or not.
TEST_CASE("cosformer forward and decode: the denominator's clamp eps", "[cosformer][forward][step][eps]") {
  CosformerOps* ops_ = ops();
  if (!ops_) return;
  for (Dtype dt : backend().dtypes())
    for (double eps : {0.5, 4.0})
      for (CosMap map : {CosMap::relu, CosMap::elu_plus_one}) {
        for (bool causal : {true, false}) {
          CosformerCase c = cos_case(2, 150, 2, 16, 16, causal, map, false);
          c.eps = eps;
          check_forward(*ops_, c, dt);
        }
        CosformerCase c = cos_case(3, 4, 2, 8, 8, true, map, true);
        c.eps = eps;
        c.length = 100;
        c.positions = {0, 7, 50};
        const std::uint64_t seed = fresh_seed();
        INFO(name(dt) << " decode " << c.str() << " seed=" << seed);
        const CosformerProblemData p(c, dt, seed);
        std::vector<double> ro, rs;
        p.reference(ro, rs);
        Tensor o = p.output(), state = p.state_output();
        state.assign(p.s0d);
        ops_->step(p.op, p.q, p.k, p.v, o, state);
        const Verdict vo = judge(o.to_double(), ro, tolerance(dt, ro));
        INFO(vo.str());
        CHECK(vo.ok);
      }
}
