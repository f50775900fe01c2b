// Error statistics, bounds and the printed table.
#include "judge.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

namespace lcsm::ref {

const char* policy_text() {
  return "Per output: the relative RMS error ||out - ref|| / ||ref|| and the max-abs error max |out - ref| against "
         "the float64 reference. Bounds (times the output's slack, 2 for backward gradients): float64 rel. RMS <= "
         "1e-11, max-abs <= 1e-10 max|ref|; float32 2e-5 and 1e-4 max|ref|; float16 max(1.25 floor, 1e-4) and "
         "4e-3 max|ref|; bfloat16 max(1.25 floor, 1e-3) and 3e-2 max|ref|, where the floor is the relative RMS error "
         "of the reference itself rounded to the dtype. States and gates are float32 (float64 for f64 problems). "
         "Decay and gate gradients (rule per_term) sum terms of both signs: each element must satisfy |out - ref| <= "
         "unit (terms + |ref|), terms being the magnitude of the terms it sums (reference/<name>.terms.npy). A NaN "
         "where the reference is finite never passes. Same policy as lcsm's test suite (tests/support/compare.hpp).";
}

test::Tolerance tolerance_of(const Expected& e) { return test::tolerance(e.dtype, e.reference.values, e.slack); }

double floor_of(const Expected& e) {
  return e.dtype == test::Dtype::f64 ? 0.0 : test::yardstick(e.dtype, e.reference.values);
}

Row judge_output(const Expected& e, const std::vector<double>& got, const std::string& stored) {
  Row r;
  r.output = e.reference.name;
  r.stored = stored;
  r.dtype = e.dtype;
  const std::vector<double>& ref = e.reference.values;
  r.stats = test::error_stats(got, ref);
  r.floor = floor_of(e);
  if (e.per_term) {
    r.per_term = true;
    r.unit = e.unit;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(got[i] - ref[i]), bound = e.unit * (e.terms[i] + std::fabs(ref[i])) + 1e-300;
      if (!(err <= bound)) ++r.bad_terms;  // NaN counts
      r.worst = std::max(r.worst, err / bound);
    }
    r.ok = r.bad_terms == 0 && r.stats.nans == 0;
    return r;
  }
  const test::Verdict v = test::judge(got, ref, tolerance_of(e));
  r.bound_rel_rms = v.tol.rel_rms;
  r.bound_max_abs = v.tol.max_abs_rel * r.stats.ref_max;
  r.ok = v.ok;
  return r;
}

void print_table(std::ostream& out, const std::vector<Row>& rows, const std::vector<std::string>& missing) {
  char line[320];
  std::snprintf(line, sizeof line, "  %-16s %-22s %-9s %10s %10s %10s %7s %11s %11s  %s\n", "output", "stored as",
                "judged as", "rel. RMS", "max abs", "floor", "ratio", "bound RMS", "bound max", "result");
  out << line;
  for (const Row& r : rows) {
    char ratio[16] = "-", floor[16] = "-";
    if (r.floor > 0 && !r.per_term) {
      std::snprintf(ratio, sizeof ratio, "%.2f", r.stats.rel_rms / r.floor);
      std::snprintf(floor, sizeof floor, "%.2e", r.floor);
    }
    char bound_rms[24], bound_max[24];
    if (r.per_term) {
      std::snprintf(bound_rms, sizeof bound_rms, "per term");
      std::snprintf(bound_max, sizeof bound_max, "%.0e x terms", r.unit);
    } else {
      std::snprintf(bound_rms, sizeof bound_rms, "%.2e", r.bound_rel_rms);
      std::snprintf(bound_max, sizeof bound_max, "%.2e", r.bound_max_abs);
    }
    std::string result = r.ok ? "pass" : "FAIL";
    if (r.stats.nans) result += " (" + std::to_string(r.stats.nans) + " NaN)";
    if (r.per_term) {
      char worst[64];
      std::snprintf(worst, sizeof worst, " (worst element at %.2g of its bound)", r.worst);
      result += r.bad_terms ? " (" + std::to_string(r.bad_terms) + " elements over)" : std::string(worst);
    }
    std::snprintf(line, sizeof line, "  %-16s %-22s %-9s %10.2e %10.2e %10s %7s %11s %11s  %s\n", r.output.c_str(),
                  r.stored.c_str(), test::name(r.dtype), r.stats.rel_rms, r.stats.max_abs, floor, ratio, bound_rms,
                  bound_max, result.c_str());
    out << line;
  }
  for (const std::string& m : missing) out << "  " << m << ": not given, not checked\n";
}

}  // namespace lcsm::ref
