// Lightning attention: the problem (the suite's LightningProblemData, reference::lightning_forward
// and lightning_backward) and the CPU run (lcsm::forward / backward / step).
#include "suite/lightning_problem.hpp"

#include <cmath>
#include <random>

#include "cpu_run.hpp"
#include "error.hpp"
#include "lcsm/lcsm.hpp"
#include "problem.hpp"

namespace lcsm::ref {

namespace {

test::DecayKind decay_kind(const std::string& s) {
  if (s == "none") return test::DecayKind::none;
  if (s == "weak") return test::DecayKind::weak;
  if (s == "strong") return test::DecayKind::strong;
  if (s == "retnet") return test::DecayKind::retnet;
  return test::DecayKind::mixed;
}

// Per unit of term magnitude (lightning_backward_test.cpp: 1e-13 for float64, 1e-6 for float32);
// 16-bit problems, which the suite does not run backward, get their dtype's unit roundoff.
double decay_grad_unit(test::Dtype d) {
  switch (d) {
    case test::Dtype::f64: return 1e-13;
    case test::Dtype::f32: return 1e-6;
    case test::Dtype::f16: return std::ldexp(1.0, -11);
    case test::Dtype::bf16: return std::ldexp(1.0, -8);
  }
  return 0;
}

}  // namespace

Problem make_lightning_problem(const Descriptor& d) {
  test::LightningCase c;
  c.B = d.B, c.T = d.T, c.H = d.H, c.K = d.K, c.V = d.V;
  c.decay = decay_kind(d.decay);
  c.with_state = d.state;
  c.varlen = d.varlen;
  const test::LightningProblemData p(c, d.dtype, d.seed);
  const index_t B = d.B, T = d.T, H = d.H, K = d.K, V = d.V, N = c.sequences();
  const Storage in = storage_of(d.dtype);
  const test::Dtype sd = test::state_dtype(d.dtype);
  Problem pr;
  pr.descriptor = d;
  pr.inputs = {tensor("q", "[B, T, H, K]", {B, T, H, K}, in, p.qd), tensor("k", "[B, T, H, K]", {B, T, H, K}, in, p.kd),
               tensor("v", "[B, T, H, V]", {B, T, H, V}, in, p.vd),
               tensor("log_decay", "[H]", {H}, Storage::f64, p.op.log_decay)};
  if (d.state) pr.inputs.push_back(tensor("initial_state", "[N, H, K, V]", {N, H, K, V}, storage_of(sd), p.s0d));
  if (!d.varlen.empty())
    pr.inputs.push_back(tensor("cu_seqlens", "[N + 1]", {N + 1}, Storage::i64, {p.cu.i64.begin(), p.cu.i64.end()}));
  std::vector<double> o, sT;
  p.reference(o, sT);
  if (d.dir != Direction::backward) {
    pr.outputs = {expected(tensor("o", "[B, T, H, V]", {B, T, H, V}, in, o), d.dtype),
                  expected(tensor("final_state", "[N, H, K, V]", {N, H, K, V}, in, sT), sd)};
  } else {
    // The output gradients as the suite's backward tests draw them.
    std::mt19937_64 rng(d.seed ^ 0xD1B54A32D192ED03ull);
    const std::vector<double> dod = test::normal_values(rng, B * T * H * V, d.dtype);
    std::vector<double> dsTd;
    if (d.state) dsTd = test::normal_values(rng, N * H * K * V, sd);
    pr.inputs.push_back(tensor("do", "[B, T, H, V]", {B, T, H, V}, in, dod));
    if (d.state) pr.inputs.push_back(tensor("d_final_state", "[N, H, K, V]", {N, H, K, V}, storage_of(sd), dsTd));
    std::vector<double> dq(p.qd.size()), dk(p.kd.size()), dv(p.vd.size()), ds0(N * H * K * V);
    auto mut = [&](std::vector<double>& x, index_t D) { return lcsm::view(x.data(), {B, T, H, D}); };
    const auto grads = reference::lightning_backward(
        p.op, p.dview(p.qd, K), p.dview(p.kd, K), p.dview(p.vd, V), p.dview(dod, V), mut(dq, K), mut(dk, K), mut(dv, V),
        d.state ? lcsm::view(p.s0d.data(), {N, H, K, V}) : View<const double, 4>{},
        d.state ? lcsm::view(dsTd.data(), {N, H, K, V}) : View<const double, 4>{}, lcsm::view(ds0.data(), {N, H, K, V}),
        d.varlen.empty() ? CuSeqlens{} : p.cu.view());
    pr.outputs = {expected(tensor("dq", "[B, T, H, K]", {B, T, H, K}, in, dq), d.dtype, 2.0),
                  expected(tensor("dk", "[B, T, H, K]", {B, T, H, K}, in, dk), d.dtype, 2.0),
                  expected(tensor("dv", "[B, T, H, V]", {B, T, H, V}, in, dv), d.dtype, 2.0)};
    if (d.state)
      pr.outputs.push_back(expected(tensor("d_initial_state", "[N, H, K, V]", {N, H, K, V}, in, ds0), sd, 2.0));
    // dg_h = sum_t t (q_t . dq_t - k_t . dk_t) + L <dS_T, S_T>: the magnitude of its terms per head.
    std::vector<double> terms(H, 0.0);
    const Sequences seqs(B, T, d.varlen.empty() ? CuSeqlens{} : p.cu.view());
    for (index_t n = 0; n < seqs.size(); ++n) {
      for (index_t t = 0; t < seqs[n].length; ++t)
        for (index_t h = 0; h < H; ++h) {
          double qq = 0, kk = 0;
          for (index_t x = 0; x < K; ++x) {
            const index_t i = ((seqs[n].batch * T + seqs[n].start + t) * H + h) * K + x;
            qq += p.qd[i] * dq[i];
            kk += p.kd[i] * dk[i];
          }
          terms[h] += static_cast<double>(t + 1) * (std::fabs(qq) + std::fabs(kk));
        }
      if (d.state)
        for (index_t h = 0; h < H; ++h)
          for (index_t i = (n * H + h) * K * V; i < (n * H + h + 1) * K * V; ++i)
            terms[h] += static_cast<double>(seqs[n].length) * std::fabs(dsTd[i] * sT[i]);
    }
    Expected dg = expected(tensor("d_log_decay", "[H]", {H}, Storage::f64, grads.d_log_decay), sd);
    dg.per_term = true;
    dg.terms = std::move(terms);
    dg.unit = decay_grad_unit(d.dtype);
    pr.outputs.push_back(std::move(dg));
  }
  pr.conventions = {
      {"recurrence", "S_t = lambda_h S_{t-1} + k_t v_t^T, o_t = scale * S_t^T q_t, lambda_h = exp(log_decay[h])"},
      {"decay", "log_decay[h] = g_h <= 0 (natural log; 0 = no decay), per head, float64"},
      {"scale", detail::concat(p.op.scale_for(K), " (1/sqrt(K)); it multiplies q")},
      {"state", "[N, H, K, V]: S[k][v], key rows and value columns; float32 (float64 for f64 problems)"}};
  if (d.dir == Direction::backward)
    pr.conventions.push_back({"d_log_decay", "[H]: dL/dg_h summed over the batch and the sequence"});
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
  const cpu::Device dev{threads};
  LightningAttention op;
  op.log_decay = pr.input("log_decay").values;
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
                    for (index_t t = 0; t < Tn; ++t)
                      lcsm::step<T>(dev, op, token(q.data(), t, B, Tn, H, K), token(k.data(), t, B, Tn, H, K),
                                    token(v.data(), t, B, Tn, H, V), token(o.data(), t, B, Tn, H, V),
                                    lcsm::view(state.data(), {N, H, K, V}));
                  });
    return {output_from(pr.output("o"), o), output_from(pr.output("final_state"), state)};
  }
  const std::vector<T> d_o = values_as<T>(pr.input("do"));
  const std::vector<S> dsT = d.state ? values_as<S>(pr.input("d_final_state")) : std::vector<S>{};
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<S> ds0(N * H * K * V), dg(H);
  watch.measure([&] {
    lcsm::backward<T>(dev, op, qv, kv, vv, lcsm::view(d_o.data(), {B, Tn, H, V}), lcsm::view(dq.data(), {B, Tn, H, K}),
                      lcsm::view(dk.data(), {B, Tn, H, K}), lcsm::view(dv.data(), {B, Tn, H, V}),
                      {s0v, d.state ? lcsm::view(dsT.data(), {N, H, K, V}) : View<const S, 4>{},
                       d.state ? lcsm::view(ds0.data(), {N, H, K, V}) : View<S, 4>{}},
                      lcsm::view(dg.data(), {H}), cu);
  });
  std::vector<Tensor64> out = {output_from(pr.output("dq"), dq), output_from(pr.output("dk"), dk),
                               output_from(pr.output("dv"), dv)};
  if (d.state) out.push_back(output_from(pr.output("d_initial_state"), ds0));
  out.push_back(output_from(pr.output("d_log_decay"), dg));
  return out;
}

}  // namespace

std::vector<Tensor64> run_lightning_cpu(const Problem& problem, int threads, Stopwatch& watch) {
  return problem.descriptor.dtype == test::Dtype::f64 ? run<double>(problem, threads, watch)
                                                      : run<float>(problem, threads, watch);
}

}  // namespace lcsm::ref
