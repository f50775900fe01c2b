// Dispatch on the operator, and the helpers every problem builder uses.
#include "problem.hpp"

#include "cpu_run.hpp"
#include "error.hpp"

namespace lcsm::ref {

const Tensor64& Problem::input(const std::string& name) const {
  for (const Tensor64& t : inputs)
    if (t.name == name) return t;
  fail("internal: the problem has no input '", name, "'");
}

const Expected& Problem::output(const std::string& name) const {
  for (const Expected& e : outputs)
    if (e.reference.name == name) return e;
  fail("internal: the problem has no output '", name, "'");
}

bool Problem::has_input(const std::string& name) const {
  for (const Tensor64& t : inputs)
    if (t.name == name) return true;
  return false;
}

Storage storage_of(test::Dtype d) {
  switch (d) {
    case test::Dtype::f64: return Storage::f64;
    case test::Dtype::f32: return Storage::f32;
    case test::Dtype::f16: return Storage::f16;
    case test::Dtype::bf16: return Storage::bf16;
  }
  return Storage::f64;
}

Tensor64 tensor(std::string name, std::string layout, std::vector<index_t> shape, Storage storage,
                std::vector<double> values) {
  return {std::move(name), std::move(layout), std::move(shape), storage, std::move(values)};
}

Expected expected(Tensor64 reference, test::Dtype dtype, double slack) {
  Expected e;
  reference.storage = storage_of(dtype);
  e.reference = std::move(reference);
  e.dtype = dtype;
  e.slack = slack;
  return e;
}

Problem make_problem(const Descriptor& d) {
  switch (d.op) {
    case Operator::lightning: return make_lightning_problem(d);
    case Operator::scalar_gate:
    case Operator::vector_gate: return make_gated_problem(d);
    case Operator::cosformer: return make_cosformer_problem(d);
    case Operator::toeplitz: return make_toeplitz_problem(d);
  }
  fail("internal: unknown operator");
}

std::vector<Tensor64> run_cpu(const Problem& problem, int threads, Stopwatch& watch) {
  switch (problem.descriptor.op) {
    case Operator::lightning: return run_lightning_cpu(problem, threads, watch);
    case Operator::scalar_gate:
    case Operator::vector_gate: return run_gated_cpu(problem, threads, watch);
    case Operator::cosformer: return run_cosformer_cpu(problem, threads, watch);
    case Operator::toeplitz: return run_toeplitz_cpu(problem, threads, watch);
  }
  fail("internal: unknown operator");
}

}  // namespace lcsm::ref
