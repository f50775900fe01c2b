// The scalar and vector gated recurrences: the problem (the suite's GatedProblemData,
// reference::gated_forward / gated_backward) and the CPU run (lcsm::forward / backward / step).
#include "suite/gated_problem.hpp"

#include <cmath>
#include <random>
#include <type_traits>

#include "cpu_run.hpp"
#include "error.hpp"
#include "lcsm/lcsm.hpp"
#include "problem.hpp"

namespace lcsm::ref {

namespace {

test::GateStrength strength(const std::string& s) {
  if (s == "none") return test::GateStrength::none;
  if (s == "weak") return test::GateStrength::weak;
  if (s == "strong") return test::GateStrength::strong;
  return test::GateStrength::mixed;
}

// Per unit of term magnitude (gated_backward_test.cpp: 1e-12 for float64; for float32 the suite's
// bound for tensor-core backends, 2^-15 (a product of two bf16 pieces, through a state), which is
// above its 2e-5 for scalar ones: a port may take either road); 16-bit problems, which the suite
// does not run backward, get their dtype's unit roundoff.
double gate_grad_unit(test::Dtype d) {
  switch (d) {
    case test::Dtype::f64: return 1e-12;
    case test::Dtype::f32: return std::ldexp(1.0, -15);
    case test::Dtype::f16: return std::ldexp(1.0, -11);
    case test::Dtype::bf16: return std::ldexp(1.0, -8);
  }
  return 0;
}

}  // namespace

Problem make_gated_problem(const Descriptor& d) {
  const bool vector = d.op == Operator::vector_gate;
  test::GatedCase c = test::gated_case(vector ? test::GateKind::vector : test::GateKind::scalar, d.B, d.T, d.H, d.K,
                                       d.V, strength(d.decay), d.state);
  c.varlen = d.varlen;
  const test::GatedProblemData p(c, d.dtype, d.seed);
  const index_t B = d.B, T = d.T, H = d.H, K = d.K, V = d.V, N = c.sequences();
  const Storage in = storage_of(d.dtype);
  const test::Dtype sd = test::state_dtype(d.dtype);
  const std::vector<index_t> gate_shape = vector ? std::vector<index_t>{B, T, H, K} : std::vector<index_t>{B, T, H};
  const char* gate_layout = vector ? "[B, T, H, K]" : "[B, T, H]";
  Problem pr;
  pr.descriptor = d;
  pr.inputs = {tensor("q", "[B, T, H, K]", {B, T, H, K}, in, p.qd), tensor("k", "[B, T, H, K]", {B, T, H, K}, in, p.kd),
               tensor("v", "[B, T, H, V]", {B, T, H, V}, in, p.vd),
               tensor("log_gate", gate_layout, gate_shape, storage_of(sd), p.gd)};
  if (d.state) pr.inputs.push_back(tensor("initial_state", "[N, H, K, V]", {N, H, K, V}, storage_of(sd), p.s0d));
  if (!d.varlen.empty())
    pr.inputs.push_back(tensor("cu_seqlens", "[N + 1]", {N + 1}, Storage::i64, {p.cu.i64.begin(), p.cu.i64.end()}));
  std::vector<double> o, sT;
  p.reference(o, sT);
  if (d.dir != Direction::backward) {
    pr.outputs = {expected(tensor("o", "[B, T, H, V]", {B, T, H, V}, in, o), d.dtype),
                  expected(tensor("final_state", "[N, H, K, V]", {N, H, K, V}, in, sT), sd)};
  } else {
    std::mt19937_64 rng(d.seed ^ 0xD1B54A32D192ED03ull);  // as the suite's backward tests draw them
    const std::vector<double> dod = test::normal_values(rng, B * T * H * V, d.dtype);
    std::vector<double> dsTd;
    if (d.state) dsTd = test::normal_values(rng, N * H * K * V, sd);
    pr.inputs.push_back(tensor("do", "[B, T, H, V]", {B, T, H, V}, in, dod));
    if (d.state) pr.inputs.push_back(tensor("d_final_state", "[N, H, K, V]", {N, H, K, V}, storage_of(sd), dsTd));
    std::vector<double> dq(p.qd.size()), dk(p.kd.size()), dv(p.vd.size()), ds0(N * H * K * V), dg;
    auto mut = [&](std::vector<double>& x, index_t D) { return lcsm::view(x.data(), {B, T, H, D}); };
    p.with_reference_op([&](const auto& op) {
      dg = reference::gated_backward(op, p.dview(p.qd, K), p.dview(p.kd, K), p.dview(p.vd, V), p.dview(dod, V),
                                     mut(dq, K), mut(dk, K), mut(dv, V), p.s0_view(),
                                     d.state ? lcsm::view(dsTd.data(), {N, H, K, V}) : View<const double, 4>{},
                                     lcsm::view(ds0.data(), {N, H, K, V}), p.cu_view())
               .d_log_gate;
    });
    pr.outputs = {expected(tensor("dq", "[B, T, H, K]", {B, T, H, K}, in, dq), d.dtype, 2.0),
                  expected(tensor("dk", "[B, T, H, K]", {B, T, H, K}, in, dk), d.dtype, 2.0),
                  expected(tensor("dv", "[B, T, H, V]", {B, T, H, V}, in, dv), d.dtype, 2.0)};
    if (d.state)
      pr.outputs.push_back(expected(tensor("d_initial_state", "[N, H, K, V]", {N, H, K, V}, in, ds0), sd, 2.0));
    // dg_t sums terms of both signs: each element against the magnitude of its terms, as the suite
    // forms it (tests/suite/gated_problem.hpp).
    std::vector<double> terms = test::gate_gradient_terms(p, test::term_magnitudes(p, dod, dsTd), dsTd, sT);
    Expected e = expected(tensor("d_log_gate", gate_layout, gate_shape, Storage::f64, dg), sd);
    e.per_term = true;
    e.terms = std::move(terms);
    e.unit = gate_grad_unit(d.dtype);
    pr.outputs.push_back(std::move(e));
  }
  pr.conventions = {
      {"recurrence",
       vector ? "S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale * S_t^T q_t, g_t = log_gate[b, t, h, :]"
              : "S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = scale * S_t^T q_t, g_t = log_gate[b, t, h]"},
      {"decay", "log_gate <= 0 (natural log, per token; 0 = no decay), float32 (float64 for f64 problems)"},
      {"scale", detail::concat(1.0 / std::sqrt(static_cast<double>(K)), " (1/sqrt(K)); it multiplies q")},
      {"state", "[N, H, K, V]: S[k][v], key rows and value columns; float32 (float64 for f64 problems)"}};
  if (d.dir == Direction::backward) pr.conventions.push_back({"d_log_gate", "dL/dlog_gate, the shape of log_gate"});
  return pr;
}

namespace {

template <class X>
View<X, 4> token(X* base, index_t t, index_t B, index_t T, index_t H, index_t D) {
  return lcsm::view(base + t * H * D, {B, 1, H, D}, {T * H * D, H * D, D, 1});
}

template <class T, class Op>
std::vector<Tensor64> run(const Problem& pr, int threads, Stopwatch& watch) {
  using S = state_t<T>;
  constexpr bool vector = std::is_same_v<Op, VectorGatedAttention<T>>;
  const Descriptor& d = pr.descriptor;
  const index_t B = d.B, Tn = d.T, H = d.H, K = d.K, V = d.V, N = d.sequences(), W = vector ? K : 1;
  const cpu::Device dev{threads};
  const std::vector<T> q = values_as<T>(pr.input("q")), k = values_as<T>(pr.input("k")),
                       v = values_as<T>(pr.input("v"));
  const std::vector<S> g = values_as<S>(pr.input("log_gate"));
  const auto qv = lcsm::view(q.data(), {B, Tn, H, K}), kv = lcsm::view(k.data(), {B, Tn, H, K});
  const auto vv = lcsm::view(v.data(), {B, Tn, H, V});
  Op op;
  // The gate of tokens [t, t + n) (all of them for forward and backward).
  auto set_gate = [&](index_t t, index_t n) {
    if constexpr (vector) op.log_gate = lcsm::view(g.data() + t * H * K, {B, n, H, K}, {Tn * H * K, H * K, K, 1});
    else op.log_gate = lcsm::view(g.data() + t * H, {B, n, H}, {Tn * H, H, 1});
  };
  set_gate(0, Tn);
  std::vector<std::int64_t> offsets;
  CuSeqlens cu;
  if (pr.has_input("cu_seqlens")) {
    offsets = values_as<std::int64_t>(pr.input("cu_seqlens"));
    cu = CuSeqlens(offsets.data(), static_cast<index_t>(offsets.size()));
  }
  const std::vector<S> s0 = d.state ? values_as<S>(pr.input("initial_state")) : std::vector<S>(N * H * K * V, S(0));
  const View<const S, 4> s0v = d.state ? lcsm::view(s0.data(), {N, H, K, V}) : View<const S, 4>{};
  if (d.dir == Direction::forward) {
    std::vector<T> o(B * Tn * H * V);
    std::vector<S> sT(N * H * K * V);
    watch.measure([&] {
      lcsm::forward<T>(dev, op, qv, kv, vv, lcsm::view(o.data(), {B, Tn, H, V}),
                       {s0v, lcsm::view(sT.data(), {N, H, K, V})}, cu);
    });
    return {output_from(pr.output("o"), o), output_from(pr.output("final_state"), sT)};
  }
  if (d.dir == Direction::step) {
    std::vector<T> o(B * Tn * H * V);
    std::vector<S> state;
    watch.measure([&] { state = s0; },
                  [&] {
                    for (index_t t = 0; t < Tn; ++t) {
                      set_gate(t, 1);
                      lcsm::step<T>(dev, op, token(q.data(), t, B, Tn, H, K), token(k.data(), t, B, Tn, H, K),
                                    token(v.data(), t, B, Tn, H, V), token(o.data(), t, B, Tn, H, V),
                                    lcsm::view(state.data(), {N, H, K, V}));
                    }
                  });
    return {output_from(pr.output("o"), o), output_from(pr.output("final_state"), state)};
  }
  const std::vector<T> d_o = values_as<T>(pr.input("do"));
  const std::vector<S> dsT = d.state ? values_as<S>(pr.input("d_final_state")) : std::vector<S>{};
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<S> ds0(N * H * K * V), dg(B * Tn * H * W);
  watch.measure([&] {
    auto dgv = [&] {
      if constexpr (vector) return lcsm::view(dg.data(), {B, Tn, H, K});
      else return lcsm::view(dg.data(), {B, Tn, H});
    }();
    lcsm::backward<T>(dev, op, qv, kv, vv, lcsm::view(d_o.data(), {B, Tn, H, V}), lcsm::view(dq.data(), {B, Tn, H, K}),
                      lcsm::view(dk.data(), {B, Tn, H, K}), lcsm::view(dv.data(), {B, Tn, H, V}),
                      {s0v, d.state ? lcsm::view(dsT.data(), {N, H, K, V}) : View<const S, 4>{},
                       d.state ? lcsm::view(ds0.data(), {N, H, K, V}) : View<S, 4>{}},
                      dgv, cu);
  });
  std::vector<Tensor64> out = {output_from(pr.output("dq"), dq), output_from(pr.output("dk"), dk),
                               output_from(pr.output("dv"), dv)};
  if (d.state) out.push_back(output_from(pr.output("d_initial_state"), ds0));
  out.push_back(output_from(pr.output("d_log_gate"), dg));
  return out;
}

}  // namespace

std::vector<Tensor64> run_gated_cpu(const Problem& problem, int threads, Stopwatch& watch) {
  const bool f64 = problem.descriptor.dtype == test::Dtype::f64;
  if (problem.descriptor.op == Operator::vector_gate)
    return f64 ? run<double, VectorGatedAttention<double>>(problem, threads, watch)
               : run<float, VectorGatedAttention<float>>(problem, threads, watch);
  return f64 ? run<double, ScalarGatedAttention<double>>(problem, threads, watch)
             : run<float, ScalarGatedAttention<float>>(problem, threads, watch);
}

}  // namespace lcsm::ref
