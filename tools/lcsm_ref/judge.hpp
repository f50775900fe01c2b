// The tolerance policy, shared with the test suite (tests/support/compare.hpp is the one source):
// relative RMS error and max-abs error against the float64 reference; 16-bit outputs against 1.25x
// the error of the reference itself rounded to the output dtype (the "floor": no port can beat it);
// decay and gate gradients per element against the magnitude of the terms they sum. NaN never passes.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "problem.hpp"
#include "support/compare.hpp"

namespace lcsm::ref {

struct Row {
  std::string output;
  std::string stored;  // the element type the compared values came in ("float32", "bfloat16 (uint16 bits)")
  test::Dtype dtype;   // the precision it was judged in
  test::ErrorStats stats;
  double floor = 0;  // relative RMS error of the reference rounded to `dtype`
  double bound_rel_rms = 0, bound_max_abs = 0;
  bool per_term = false;
  index_t bad_terms = 0;  // per_term: elements over their bound
  double worst = 0;       // per_term: the largest |out - ref| / bound of an element
  double unit = 0;
  bool ok = false;
};

// Judges `got` (row-major, the reference's shape) against one expected output.
Row judge_output(const Expected& e, const std::vector<double>& got, const std::string& stored);

// One line per row under a header; a row that was not given prints as "not checked".
void print_table(std::ostream& out, const std::vector<Row>& rows, const std::vector<std::string>& missing = {});

// The policy's words and, for one output, its bounds (for the manifest).
const char* policy_text();
test::Tolerance tolerance_of(const Expected& e);
double floor_of(const Expected& e);

}  // namespace lcsm::ref
