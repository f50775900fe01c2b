// The Toeplitz long convolution: the problem (the suite's ToeplitzProblemData, the direct sums
// reference::toeplitz_forward / toeplitz_backward) and the CPU run (lcsm::forward / backward /
// step over a kept history).
#include "suite/toeplitz_problem.hpp"

#include <random>

#include "cpu_run.hpp"
#include "error.hpp"
#include "lcsm/lcsm.hpp"
#include "problem.hpp"

namespace lcsm::ref {

Problem make_toeplitz_problem(const Descriptor& d) {
  test::ToeplitzCase c =
      d.varlen.empty() ? test::toeplitz_case(d.B, d.T, d.C, d.causal) : test::toeplitz_varlen(d.varlen, d.C, d.causal);
  c.decaying = d.decay == "strong";
  const test::ToeplitzProblemData p(c, d.dtype, d.seed);
  const index_t B = d.B, n = d.T, C = d.C, count = c.coefficient_count(), N = d.sequences();
  const Storage in = storage_of(d.dtype);
  const char* coefficient_layout = d.causal ? "[C, n]: a_r at index r" : "[C, 2n - 1]: a_r at index r + n - 1";
  Problem pr;
  pr.descriptor = d;
  pr.inputs = {tensor("x", "[B, n, C]", {B, n, C}, in, p.xd),
               tensor("coefficients", coefficient_layout, {C, count}, in, p.ad)};
  if (!d.varlen.empty())
    pr.inputs.push_back(tensor("cu_seqlens", "[N + 1]", {N + 1}, Storage::i64, {p.cu.i64.begin(), p.cu.i64.end()}));
  if (d.dir != Direction::backward) {
    pr.outputs = {expected(tensor("y", "[B, n, C]", {B, n, C}, in, p.reference()), d.dtype)};
  } else {
    std::mt19937_64 rng(d.seed ^ 0xD1B54A32D192ED03ull);  // as the suite's backward tests draw dy
    const std::vector<double> dyd = test::normal_values(rng, B * n * C, d.dtype);
    pr.inputs.push_back(tensor("dy", "[B, n, C]", {B, n, C}, in, dyd));
    std::vector<double> dx(p.xd.size()), da(p.ad.size());
    reference::toeplitz_backward(p.op(), p.dview(p.xd), p.dview(dyd), p.mview(dx), lcsm::view(da.data(), {C, count}),
                                 p.cu_view());
    pr.outputs = {expected(tensor("dx", "[B, n, C]", {B, n, C}, in, dx), d.dtype, 2.0),
                  expected(tensor("da", coefficient_layout, {C, count}, in, da), d.dtype, 2.0)};
  }
  pr.conventions = {
      {"formula", d.causal ? "y[b, t, c] = sum_{s <= t} a[c, t - s] x[b, s, c]"
                           : "y[b, t, c] = sum_s a[c, t - s] x[b, s, c], -n < t - s < n"},
      {"coefficients",
       d.varlen.empty() ? "one row per channel" : "one row per channel; a sequence of length l uses a_{-(l-1)..l-1}"},
      {"step",
       "decode keeps the past inputs (no finite state): y_t for tokens t = 0..n-1 one at a time equals the forward"}};
  if (d.dir == Direction::backward)
    pr.conventions.push_back({"da", "dL/da, the coefficients' shape; entries no sequence reaches are 0"});
  return pr;
}

namespace {

template <class T>
std::vector<Tensor64> run(const Problem& pr, int threads, Stopwatch& watch) {
  const Descriptor& d = pr.descriptor;
  const index_t B = d.B, n = d.T, C = d.C;
  const cpu::Device dev{threads};
  const std::vector<T> x = values_as<T>(pr.input("x")), a = values_as<T>(pr.input("coefficients"));
  ToeplitzConvolution<T> op;
  op.causal = d.causal;
  op.coefficients = lcsm::view(a.data(), {C, pr.input("coefficients").shape[1]});
  const auto xv = lcsm::view(x.data(), {B, n, C});
  std::vector<std::int64_t> offsets;
  CuSeqlens cu;
  if (pr.has_input("cu_seqlens")) {
    offsets = values_as<std::int64_t>(pr.input("cu_seqlens"));
    cu = CuSeqlens(offsets.data(), static_cast<index_t>(offsets.size()));
  }
  if (d.dir == Direction::forward) {
    std::vector<T> y(x.size());
    watch.measure([&] { lcsm::forward<T>(dev, op, xv, lcsm::view(y.data(), {B, n, C}), cu); });
    return {output_from(pr.output("y"), y)};
  }
  if (d.dir == Direction::step) {
    std::vector<T> y(x.size()), past(x.size());
    ToeplitzHistory<T> history{lcsm::view(past.data(), {B, n, C}), 0};
    watch.measure([&] { history.position = 0; },
                  [&] {
                    for (index_t t = 0; t < n; ++t)
                      lcsm::step<T>(dev, op, lcsm::view(x.data() + t * C, {B, 1, C}, {n * C, C, 1}),
                                    lcsm::view(y.data() + t * C, {B, 1, C}, {n * C, C, 1}), history);
                  });
    return {output_from(pr.output("y"), y)};
  }
  const std::vector<T> dy = values_as<T>(pr.input("dy"));
  std::vector<T> dx(x.size()), da(a.size());
  watch.measure([&] {
    lcsm::backward<T>(dev, op, xv, lcsm::view(dy.data(), {B, n, C}), lcsm::view(dx.data(), {B, n, C}),
                      lcsm::view(da.data(), {C, pr.input("coefficients").shape[1]}), cu);
  });
  return {output_from(pr.output("dx"), dx), output_from(pr.output("da"), da)};
}

}  // namespace

std::vector<Tensor64> run_toeplitz_cpu(const Problem& problem, int threads, Stopwatch& watch) {
  return problem.descriptor.dtype == test::Dtype::f64 ? run<double>(problem, threads, watch)
                                                      : run<float>(problem, threads, watch);
}

}  // namespace lcsm::ref
