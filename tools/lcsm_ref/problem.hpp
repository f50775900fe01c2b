// One conformance problem made concrete: the inputs a port reads, and for every output it must
// produce the float64 reference, the dtype it is judged in and how. Built per operator (one file
// each, *_problem.cpp) from the test suite's problem generators, so a descriptor and a seed give
// the same random inputs the suite would draw, and from the float64 reference functions of
// include/lcsm/reference/.
#pragma once

#include <string>
#include <vector>

#include "descriptor.hpp"
#include "npy.hpp"

namespace lcsm::ref {

struct Tensor64 {
  std::string name;
  std::string layout;  // "[B, T, H, K]", the meaning of each dimension
  std::vector<index_t> shape;
  Storage storage = Storage::f64;  // how it is written (inputs) or what the port should produce (outputs)
  std::vector<double> values;      // row-major, exactly representable in `storage`
};

// How an output is judged. `relative`: relative RMS error and max-abs error against the float64
// reference, the bounds of tests/support/compare.hpp (times `slack`). `per_term`: a decay or gate
// gradient sums terms of both signs, so each element's error is judged against the magnitude of
// the terms it sums (`terms`, same shape): |out - ref| <= unit * (terms + |ref|), as the suite does.
struct Expected {
  Tensor64 reference;
  test::Dtype dtype = test::Dtype::f32;  // the precision it is judged in
  double slack = 1.0;
  bool per_term = false;
  std::vector<double> terms;
  double unit = 0;
};

struct Problem {
  Descriptor descriptor;
  std::vector<Tensor64> inputs;
  std::vector<Expected> outputs;
  std::vector<std::pair<std::string, std::string>> conventions;  // shown in the manifest
  const Tensor64& input(const std::string& name) const;
  const Expected& output(const std::string& name) const;
  bool has_input(const std::string& name) const;
};

// The problem of a descriptor: inputs, references, conventions (dispatches on the operator).
Problem make_problem(const Descriptor& d);

// Per-operator builders.
Problem make_lightning_problem(const Descriptor& d);
Problem make_gated_problem(const Descriptor& d);
Problem make_cosformer_problem(const Descriptor& d);
Problem make_toeplitz_problem(const Descriptor& d);

// Helpers shared by the builders.
Storage storage_of(test::Dtype d);
Tensor64 tensor(std::string name, std::string layout, std::vector<index_t> shape, Storage storage,
                std::vector<double> values);
Expected expected(Tensor64 reference, test::Dtype dtype, double slack = 1.0);

}  // namespace lcsm::ref
