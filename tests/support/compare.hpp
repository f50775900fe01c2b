// Comparing a backend's output against the float64 reference: relative RMS error, a max-abs bound,
// and NaN never passes. 16-bit outputs are judged against the error of the reference itself
// rounded to the output type (the "yardstick": no kernel can beat it).
#pragma once

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "support/host_tensor.hpp"

namespace lcsm::test {

struct ErrorStats {
  double rel_rms = 0, max_abs = 0, ref_rms = 0, ref_max = 0;
  index_t nans = 0, worst = -1;
  std::string str() const {
    std::ostringstream s;
    s << "rel_rms=" << rel_rms << " max_abs=" << max_abs << " (at " << worst << ") ref_rms=" << ref_rms
      << " ref_max=" << ref_max << " nans=" << nans;
    return s.str();
  }
};

inline ErrorStats error_stats(const std::vector<double>& out, const std::vector<double>& ref) {
  ErrorStats e;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i]) && !std::isnan(ref[i])) {
      ++e.nans;
      continue;
    }
    const double d = std::fabs(out[i] - ref[i]);
    num += d * d;
    den += ref[i] * ref[i];
    if (d > e.max_abs) {
      e.max_abs = d;
      e.worst = static_cast<index_t>(i);
    }
    e.ref_max = std::max(e.ref_max, std::fabs(ref[i]));
  }
  e.ref_rms = ref.empty() ? 0 : std::sqrt(den / ref.size());
  e.rel_rms = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return e;
}

// The relative RMS error of the reference rounded to dtype.
inline double yardstick(Dtype dtype, const std::vector<double>& ref) {
  std::vector<double> rounded(ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) rounded[i] = round_to(dtype, ref[i]);
  return error_stats(rounded, ref).rel_rms;
}

struct Tolerance {
  double rel_rms;      // bound on ||out - ref|| / ||ref||
  double max_abs_rel;  // bound on max |out - ref| / max |ref|
};

// Computation dtype `compute` (float64 or float32 arithmetic), output rounded to `out`.
inline Tolerance tolerance(Dtype out, const std::vector<double>& ref, double slack = 1.0) {
  switch (out) {
    case Dtype::f64: return {1e-11 * slack, 1e-10 * slack};
    // float32: 1e-5 is the goal; 2e-5 leaves room for tensor-core backends, whose fp32 products are
    // three bf16 products (about 16 significant bits): measured 5e-6 to 1.1e-5 on random inputs.
    case Dtype::f32: return {2e-5 * slack, 1e-4 * slack};
    case Dtype::f16: return {std::max(1.25 * yardstick(out, ref), 1e-4) * slack, 4e-3 * slack};
    case Dtype::bf16: return {std::max(1.25 * yardstick(out, ref), 1e-3) * slack, 3e-2 * slack};
  }
  return {0, 0};
}

// The error growth along a sequence: the relative RMS error of the first and of the last `window`
// tokens of a [1, T, ...] output (`per_token` values each, row-major).
struct Growth {
  double first, last;
  bool within(double factor, double floor) const { return last <= factor * first + floor; }
  std::string str() const {
    std::ostringstream s;
    s << "rel_rms over the first tokens " << first << ", over the last " << last;
    return s.str();
  }
};

inline Growth error_growth(const std::vector<double>& out, const std::vector<double>& ref, std::size_t per_token,
                           std::size_t window) {
  const std::size_t n = window * per_token;
  auto part = [&](std::size_t begin) {
    return error_stats(std::vector<double>(out.begin() + begin, out.begin() + begin + n),
                       std::vector<double>(ref.begin() + begin, ref.begin() + begin + n))
        .rel_rms;
  };
  return {part(0), part(ref.size() - n)};
}

struct Verdict {
  bool ok;
  ErrorStats stats;
  Tolerance tol;
  std::string str() const {
    std::ostringstream s;
    s << stats.str() << " | tolerance rel_rms<=" << tol.rel_rms << " max_abs<=" << tol.max_abs_rel * stats.ref_max;
    return s.str();
  }
};

inline Verdict judge(const std::vector<double>& out, const std::vector<double>& ref, const Tolerance& tol) {
  const ErrorStats e = error_stats(out, ref);
  const bool ok = e.nans == 0 && e.rel_rms <= tol.rel_rms && e.max_abs <= tol.max_abs_rel * std::max(e.ref_max, 1e-300);
  return {ok || (ref.empty() && e.nans == 0), e, tol};
}

}  // namespace lcsm::test
