// cosFormer backward on the backend under test, against the float64 reference backward (the EOS
// reference backward chained through the division and the feature map), which is itself checked
// here against central finite differences of the direct formula.
#include <catch2/catch.hpp>

#include "suite/cosformer_problem.hpp"
#include "suite/seeds.hpp"

using namespace lcsm;
using namespace lcsm::test;

namespace {

// Null (with a warning) where the backend has no cosFormer backward yet.
CosformerOps* ops() {
  CosformerOps* o = backend().cosformer();
  if (!o || !o->has_backward()) {
    WARN("backend " << backend().name() << " has no cosFormer backward: nothing checked");
    return nullptr;
  }
  return o;
}

View<double, 4> mutable_view(std::vector<double>& x, const Shape<4>& shape) {
  return {x.data(), shape, contiguous_strides<4>(shape)};
}
View<const double, 4> const_view(const std::vector<double>& x, const Shape<4>& shape) {
  return {x.data(), shape, contiguous_strides<4>(shape)};
}

// fast: Precision::fast, judged against a multiple of the bf16 yardstick whatever the input type
// (tensor-core backends round the features to bf16 once; CPU backends ignore it).
void check_backward(CosformerOps& ops, const CosformerCase& c, Dtype dtype, bool fast = false) {
  const std::uint64_t seed = fresh_seed();
  INFO(backend().name() << " " << name(dtype) << " " << c.str() << (fast ? " fast" : "") << " seed=" << seed);
  CosformerProblemData p(c, dtype, seed);
  if (fast) p.op.precision = Precision::fast;
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
  const Shape<4> qs{c.B, c.T, c.H, c.K}, vs{c.B, c.T, c.H, c.V};
  std::vector<double> rdq(p.qd.size()), rdk(p.kd.size()), rdv(p.vd.size()), rds0(dsT.numel());
  reference::cosformer_backward(p.op, p.dview(p.qd, c.K), p.dview(p.kd, c.K), p.dview(p.vd, c.V), p.dview(dod, c.V),
                                mutable_view(rdq, qs), mutable_view(rdk, qs), mutable_view(rdv, vs), p.s0view(),
                                c.with_state ? const_view(dsTd, p.state_shape()) : View<const double, 4>{},
                                mutable_view(rds0, p.state_shape()), p.cu_view());
  Tensor dq(dtype, p.q.shape(), p.q.strides()), dk(dtype, p.k.shape(), p.k.strides()), dv = p.output();
  Tensor ds0 = p.state_output();
  dq.poison();
  dk.poison();
  ops.backward(p.op, p.q, p.k, p.v, d_o, p.initial(), c.with_state ? &dsT : nullptr, {&dq, &dk, &dv, &ds0},
               p.offsets());
  const struct {
    const char* what;
    std::vector<double> got;
    const std::vector<double>& want;
    Dtype dt;
    bool state;
  } checks[] = {{"dq", dq.to_double(), rdq, dtype, false},
                {"dk", dk.to_double(), rdk, dtype, false},
                {"dv", dv.to_double(), rdv, dtype, false},
                {"d_initial_state", ds0.to_double(), rds0, state_dtype(dtype), true}};
  for (const auto& ch : checks) {
    const Tolerance tol = !fast      ? tolerance(ch.dt, ch.want, 2.0)
                          : ch.state ? Tolerance{1e-2, 1e-1}
                                     : tolerance(Dtype::bf16, ch.want, 4.0);
    const Verdict v = judge(ch.got, ch.want, tol);
    INFO(ch.what << ": " << v.str());
    CHECK(v.ok);
  }
}

}  // namespace

TEST_CASE("cosformer reference: backward agrees with finite differences", "[cosformer][reference][backward]") {
  for (bool causal : {true, false})
    for (CosMap map : {CosMap::relu, CosMap::elu_plus_one})
      for (bool varlen : {false, true}) {
        CosformerCase c =
            varlen ? cos_varlen_case({3, 0, 5}, 2, 3, 2, causal, true) : cos_case(2, 6, 2, 3, 2, causal, map, true);
        c.map = map;
        c.length = 9;
        const std::uint64_t seed = fresh_seed();
        INFO(c.str() << " seed=" << seed);
        CosformerProblemData p(c, Dtype::f64, seed);
        std::mt19937_64 rng(seed + 1);
        const Shape<4> qs{c.B, c.T, c.H, c.K}, vs{c.B, c.T, c.H, c.V};
        const auto wo = normal_values(rng, c.B * c.T * c.H * c.V, Dtype::f64);
        const auto ws = normal_values(rng, p.s0d.size(), Dtype::f64);
        // loss = <wo, o> + <ws, final state>: o from the direct formula, the state from the EOS.
        auto loss = [&] {
          const std::vector<double> o = p.direct();
          std::vector<double> ro, sT;
          p.reference(ro, sT);
          double l = 0;
          for (std::size_t j = 0; j < o.size(); ++j) l += wo[j] * o[j];
          for (std::size_t j = 0; j < sT.size(); ++j) l += ws[j] * sT[j];
          return l;
        };
        std::vector<double> dq(p.qd.size()), dk(p.kd.size()), dv(p.vd.size()), ds0(p.s0d.size());
        reference::cosformer_backward(p.op, p.dview(p.qd, c.K), p.dview(p.kd, c.K), p.dview(p.vd, c.V),
                                      const_view(wo, vs), mutable_view(dq, qs), mutable_view(dk, qs),
                                      mutable_view(dv, vs), p.s0view(), const_view(ws, p.state_shape()),
                                      mutable_view(ds0, p.state_shape()), p.cu_view());
        auto numeric = [&](std::vector<double>& x) {
          std::vector<double> out(x.size());
          for (std::size_t j = 0; j < x.size(); ++j) {
            const double keep = x[j], h = 1e-6;
            x[j] = keep + h;
            const double up = loss();
            x[j] = keep - h;
            const double down = loss();
            x[j] = keep;
            out[j] = (up - down) / (2 * h);
          }
          return out;
        };
        const struct {
          const char* what;
          std::vector<double>* x;
          const std::vector<double>* analytic;
        } checks[] = {{"dq", &p.qd, &dq}, {"dk", &p.kd, &dk}, {"dv", &p.vd, &dv}, {"d_initial_state", &p.s0d, &ds0}};
        for (const auto& ch : checks) {
          const Verdict v = judge(*ch.analytic, numeric(*ch.x), {1e-6, 1e-5});
          INFO(ch.what << ": " << v.str());
          CHECK(v.ok);
        }
      }
}

TEST_CASE("cosformer backward: lengths, feature maps and states", "[cosformer][backward]") {
  CosformerOps* o = ops();
  if (!o || !backend().has_backward()) return;
  for (Dtype dt : backend().dtypes()) {
    for (index_t T : {1, 63, 64, 65, 200})
      for (bool causal : {true, false})
        check_backward(*o, cos_case(2, T, 2, 32, 32, causal, CosMap::relu, T != 64), dt);
    for (bool causal : {true, false})
      for (CosMap map : {CosMap::relu, CosMap::elu_plus_one}) {
        CosformerCase c = cos_case(2, 150, 3, 48, 40, causal, map, true);
        c.length = 900;
        c.positions = {0, 600};
        check_backward(*o, c, dt);
      }
    check_backward(*o, cos_case(1, 130, 2, 100, 60, true, CosMap::relu, true), dt);
    for (bool causal : {true, false})  // no tokens: the initial state's gradient is the final state's
      check_backward(*o, cos_case(2, 0, 2, 16, 16, causal, CosMap::relu, true), dt);
    for (bool causal : {true, false})  // K = V = 128: the largest key tile on CUDA (2K = 256 state rows)
      check_backward(*o, cos_case(1, 100, 1, 128, 128, causal, CosMap::relu, true), dt);
    check_backward(*o, cos_case(1, 200, 11, 32, 32, true, CosMap::relu, true), dt);  // groups of heads
  }
}

TEST_CASE("cosformer backward: one head cut into segments", "[cosformer][backward][long]") {
  CosformerOps* o = ops();
  if (!o || !backend().has_backward()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) check_backward(*o, cos_case(1, 1000, 1, 32, 32, causal, CosMap::relu, true), dt);
}

TEST_CASE("cosformer backward: the denominator's clamp eps", "[cosformer][backward][eps]") {
  CosformerOps* o = ops();
  if (!o || !backend().has_backward()) return;
  for (Dtype dt : backend().dtypes())
    for (double eps : {0.5, 4.0})
      for (bool causal : {true, false}) {
        CosformerCase c = cos_case(1, 130, 2, 16, 16, causal, CosMap::relu, true);
        c.eps = eps;
        check_backward(*o, c, dt);
        c.map = CosMap::elu_plus_one;
        check_backward(*o, c, dt);
      }
}

TEST_CASE("cosformer backward: varlen and strided memory", "[cosformer][backward][varlen]") {
  CosformerOps* o = ops();
  if (!o || !backend().has_backward()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      check_backward(*o, cos_varlen_case({1, 63, 300, 64}, 2, 32, 32, causal, true), dt);
      check_backward(*o, cos_varlen_case({50, 0, 80}, 1, 16, 24, causal, false, true), dt);
      CosformerCase c = cos_case(2, 90, 2, 32, 32, causal, CosMap::elu_plus_one, true);
      c.strided = true;
      check_backward(*o, c, dt);
    }
}

TEST_CASE("cosformer backward: independent of the chunk size", "[cosformer][backward][invariant]") {
  CosformerOps* o = ops();
  if (!o || !backend().has_backward() || !backend().honours_chunk()) return;
  for (Dtype dt : backend().dtypes())
    for (index_t chunk : {1, 16, 64, 100}) {
      CosformerCase c = cos_case(1, 257, 2, 32, 32, true, CosMap::relu, true);
      c.chunk = chunk;
      check_backward(*o, c, dt);
    }
}

TEST_CASE("cosformer backward: fast precision stays within bf16 rounding", "[cosformer][backward][precision]") {
  CosformerOps* o = ops();
  if (!o || !backend().has_backward()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      check_backward(*o, cos_case(2, 300, 2, 64, 48, causal, CosMap::relu, true), dt, true);
      CosformerCase c = cos_case(1, 200, 2, 128, 128, causal, CosMap::elu_plus_one, true);
      c.length = 500;
      check_backward(*o, c, dt, true);
      check_backward(*o, cos_varlen_case({1, 63, 300, 0, 64}, 2, 32, 32, causal, true), dt, true);
    }
}
