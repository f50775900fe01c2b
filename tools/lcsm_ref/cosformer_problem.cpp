// cosFormer: the problem (the suite's CosformerProblemData, reference::cosformer_forward and
// cosformer_backward) and the CPU run (lcsm::forward / backward / step).
#include "suite/cosformer_problem.hpp"

#include <random>

#include "cpu_run.hpp"
#include "error.hpp"
#include "lcsm/lcsm.hpp"
#include "problem.hpp"

namespace lcsm::ref {

Problem make_cosformer_problem(const Descriptor& d) {
  test::CosformerCase c = test::cos_case(d.B, d.T, d.H, d.K, d.V, d.causal,
                                         d.elu ? test::CosMap::elu_plus_one : test::CosMap::relu, d.state);
  c.varlen = d.varlen;
  c.length = d.M;
  if (d.pos != 0 || d.dir == Direction::step) c.positions.assign(c.sequences(), d.pos);
  const test::CosformerProblemData p(c, d.dtype, d.seed);
  const index_t B = d.B, T = d.T, H = d.H, K = d.K, V = d.V, N = c.sequences();
  const Storage in = storage_of(d.dtype);
  const test::Dtype sd = test::state_dtype(d.dtype);
  const std::vector<index_t> state_shape{N, H, 2 * K, V + 1};
  const char* state_layout = "[N, H, 2K, V + 1]";
  Problem pr;
  pr.descriptor = d;
  pr.inputs = {tensor("q", "[B, T, H, K]", {B, T, H, K}, in, p.qd), tensor("k", "[B, T, H, K]", {B, T, H, K}, in, p.kd),
               tensor("v", "[B, T, H, V]", {B, T, H, V}, in, p.vd)};
  if (d.state) pr.inputs.push_back(tensor("initial_state", state_layout, state_shape, storage_of(sd), p.s0d));
  if (!c.positions.empty())
    pr.inputs.push_back(tensor("positions", "[N]", {N}, Storage::i64, {c.positions.begin(), c.positions.end()}));
  if (!d.varlen.empty())
    pr.inputs.push_back(tensor("cu_seqlens", "[N + 1]", {N + 1}, Storage::i64, {p.cu.i64.begin(), p.cu.i64.end()}));
  if (d.dir != Direction::backward) {
    std::vector<double> o, sT;
    p.reference(o, sT);
    pr.outputs = {expected(tensor("o", "[B, T, H, V]", {B, T, H, V}, in, o), d.dtype),
                  expected(tensor("final_state", state_layout, state_shape, in, sT), sd)};
  } else {
    std::mt19937_64 rng(d.seed ^ 0xD1B54A32D192ED03ull);  // as the suite's backward tests draw them
    const std::vector<double> dod = test::normal_values(rng, B * T * H * V, d.dtype);
    std::vector<double> dsTd;
    if (d.state) dsTd = test::normal_values(rng, N * H * 2 * K * (V + 1), sd);
    pr.inputs.push_back(tensor("do", "[B, T, H, V]", {B, T, H, V}, in, dod));
    if (d.state) pr.inputs.push_back(tensor("d_final_state", state_layout, state_shape, storage_of(sd), dsTd));
    std::vector<double> dq(p.qd.size()), dk(p.kd.size()), dv(p.vd.size()), ds0(N * H * 2 * K * (V + 1));
    const Shape<4> qs{B, T, H, K}, vs{B, T, H, V}, ss{N, H, 2 * K, V + 1};
    auto mut = [](std::vector<double>& x, const Shape<4>& s) {
      return View<double, 4>(x.data(), s, contiguous_strides<4>(s));
    };
    reference::cosformer_backward(
        p.op, p.dview(p.qd, K), p.dview(p.kd, K), p.dview(p.vd, V), p.dview(dod, V), mut(dq, qs), mut(dk, qs),
        mut(dv, vs), p.s0view(),
        d.state ? View<const double, 4>(dsTd.data(), ss, contiguous_strides<4>(ss)) : View<const double, 4>{},
        mut(ds0, ss), p.cu_view());
    pr.outputs = {expected(tensor("dq", "[B, T, H, K]", {B, T, H, K}, in, dq), d.dtype, 2.0),
                  expected(tensor("dk", "[B, T, H, K]", {B, T, H, K}, in, dk), d.dtype, 2.0),
                  expected(tensor("dv", "[B, T, H, V]", {B, T, H, V}, in, dv), d.dtype, 2.0)};
    if (d.state) pr.outputs.push_back(expected(tensor("d_initial_state", state_layout, state_shape, in, ds0), sd, 2.0));
  }
  pr.conventions = {
      {"formula", detail::concat("o_i = sum_j w_ij (phi(q_i).phi(k_j)) v_j / max(sum_j w_ij phi(q_i).phi(k_j), eps), ",
                                 "w_ij = cos(pi (p_i - p_j) / 2M), sums over j <= i (causal) or the whole sequence")},
      {"feature_map", d.elu ? "phi = 1 + ELU (x + 1 for x > 0, exp(x) otherwise)" : "phi = ReLU"},
      {"M", d.M ? std::to_string(*d.M) : "each sequence's own end: positions[n] + its length"},
      {"positions", "p_i = the token's 0-based position in its sequence + positions[n] (absent: 0)"},
      {"eps", "1e-06"},
      {"scale", "none (the normaliser makes it irrelevant)"},
      {"state",
       "[N, H, 2K, V + 1]: rows 0..K-1 phi(k) cos features, K..2K-1 sin features; columns 0..V-1 the "
       "numerator's sum, column V the denominator's"}};
  return pr;
}

namespace {

template <class X>
View<X, 4> token(X* base, index_t t, index_t B, index_t T, index_t H, index_t D) {
  return lcsm::view(base + t * H * D, {B, 1, H, D}, {T * H * D, H * D, D, 1});
}

template <class T>
std::vector<Tensor64> run(const Problem& pr, int threads, Stopwatch& watch) {
  using S = state_t<T>;
  const Descriptor& d = pr.descriptor;
  const index_t B = d.B, Tn = d.T, H = d.H, K = d.K, V = d.V, N = d.sequences();
  const Shape<4> ss{N, H, 2 * K, V + 1};
  const cpu::Device dev{threads};
  CosFormerAttention op;
  op.feature_map = d.elu ? CosFormerAttention::FeatureMap::elu_plus_one : CosFormerAttention::FeatureMap::relu;
  op.causal = d.causal;
  if (d.M) op.length = *d.M;
  std::vector<index_t> positions;
  if (pr.has_input("positions")) {
    positions = values_as<index_t>(pr.input("positions"));
    op.positions = lcsm::view(static_cast<const index_t*>(positions.data()), {N});
  }
  const std::vector<T> q = values_as<T>(pr.input("q")), k = values_as<T>(pr.input("k")),
                       v = values_as<T>(pr.input("v"));
  const auto qv = lcsm::view(q.data(), {B, Tn, H, K}), kv = lcsm::view(k.data(), {B, Tn, H, K});
  const auto vv = lcsm::view(v.data(), {B, Tn, H, V});
  std::vector<std::int64_t> offsets;
  CuSeqlens cu;
  if (pr.has_input("cu_seqlens")) {
    offsets = values_as<std::int64_t>(pr.input("cu_seqlens"));
    cu = CuSeqlens(offsets.data(), static_cast<index_t>(offsets.size()));
  }
  const std::vector<S> s0 =
      d.state ? values_as<S>(pr.input("initial_state")) : std::vector<S>(N * H * 2 * K * (V + 1), S(0));
  const View<const S, 4> s0v =
      d.state ? View<const S, 4>(s0.data(), ss, contiguous_strides<4>(ss)) : View<const S, 4>{};
  auto state_view = [&](std::vector<S>& x) { return View<S, 4>(x.data(), ss, contiguous_strides<4>(ss)); };
  if (d.dir == Direction::forward) {
    std::vector<T> o(B * Tn * H * V);
    std::vector<S> sT(s0.size());
    watch.measure([&] {
      lcsm::forward<T>(dev, op, qv, kv, vv, lcsm::view(o.data(), {B, Tn, H, V}), {s0v, state_view(sT)}, cu);
    });
    return {output_from(pr.output("o"), o), output_from(pr.output("final_state"), sT)};
  }
  if (d.dir == Direction::step) {
    std::vector<T> o(B * Tn * H * V);
    std::vector<S> state;
    const std::vector<index_t> first = positions;
    watch.measure([&] { state = s0; },
                  [&] {
                    for (index_t t = 0; t < Tn; ++t) {
                      for (index_t b = 0; b < B; ++b) positions[b] = first[b] + t;
                      lcsm::step<T>(dev, op, token(q.data(), t, B, Tn, H, K), token(k.data(), t, B, Tn, H, K),
                                    token(v.data(), t, B, Tn, H, V), token(o.data(), t, B, Tn, H, V),
                                    state_view(state));
                    }
                  });
    return {output_from(pr.output("o"), o), output_from(pr.output("final_state"), state)};
  }
  const std::vector<T> d_o = values_as<T>(pr.input("do"));
  std::vector<S> dsT = d.state ? values_as<S>(pr.input("d_final_state")) : std::vector<S>{};
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<S> ds0(s0.size());
  watch.measure([&] {
    lcsm::backward<T>(dev, op, qv, kv, vv, lcsm::view(d_o.data(), {B, Tn, H, V}), lcsm::view(dq.data(), {B, Tn, H, K}),
                      lcsm::view(dk.data(), {B, Tn, H, K}), lcsm::view(dv.data(), {B, Tn, H, V}),
                      {s0v, d.state ? View<const S, 4>(state_view(dsT)) : View<const S, 4>{},
                       d.state ? state_view(ds0) : View<S, 4>{}},
                      cu);
  });
  std::vector<Tensor64> out = {output_from(pr.output("dq"), dq), output_from(pr.output("dk"), dk),
                               output_from(pr.output("dv"), dv)};
  if (d.state) out.push_back(output_from(pr.output("d_initial_state"), ds0));
  return out;
}

}  // namespace

std::vector<Tensor64> run_cosformer_cpu(const Problem& problem, int threads, Stopwatch& watch) {
  return problem.descriptor.dtype == test::Dtype::f64 ? run<double>(problem, threads, watch)
                                                      : run<float>(problem, threads, watch);
}

}  // namespace lcsm::ref
