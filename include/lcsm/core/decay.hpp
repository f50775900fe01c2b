// Per-head log-decays g_h <= 0 (lambda_h = exp(g_h)) as the published models build them.
#pragma once

#include <cmath>
#include <vector>

#include "lcsm/core/error.hpp"

namespace lcsm::decay {

// The most negative log-decay or log-gate an operator takes: g in [min_log, 0]. exp(-1000) is 0 in
// float and in double, so a stronger decay means the same and can be clamped to min_log by the
// caller; the bound keeps every cumulative sum of log-gates finite (a gate of -1e308 would make
// them -inf, and their differences NaN) and its cancellation within double rounding.
constexpr double min_log = -1000.0;

// ALiBi slopes (Press et al.): 2^(-8(h+1)/H) for H a power of two; otherwise the slopes of the
// nearest smaller power of two followed by every other slope of the next larger one.
inline std::vector<double> alibi_slopes(int heads) {
  detail::check_argument(heads >= 1, "lcsm::decay::alibi_slopes", "heads", "heads >= 1", heads);
  auto power_of_two = [](int n) {
    std::vector<double> s(n);
    for (int h = 0; h < n; ++h) s[h] = std::exp2(-8.0 * (h + 1) / n);
    return s;
  };
  const int p = 1 << static_cast<int>(std::floor(std::log2(heads)));
  std::vector<double> slopes = power_of_two(p);
  if (p != heads) {
    const std::vector<double> twice = alibi_slopes(2 * p);
    for (int i = 0; static_cast<int>(slopes.size()) < heads; i += 2) slopes.push_back(twice[i]);
  }
  return slopes;
}

// ALiBi / TNL / Lightning Attention: g_h = -slope_h.
inline std::vector<double> alibi(int heads) {
  std::vector<double> g = alibi_slopes(heads);
  for (double& x : g) x = -x;
  return g;
}

// MiniMax-01 linear layers: g_h = -slope_h * (1 - layer / (num_layers - 1) + 1e-5), layer 0-based.
inline std::vector<double> minimax(int heads, int layer, int num_layers) {
  const char* where = "lcsm::decay::minimax";
  detail::check_argument(num_layers >= 2, where, "num_layers", "num_layers >= 2", num_layers);
  detail::check_argument(layer >= 0 && layer < num_layers, where, "layer",
                         detail::concat("0 <= layer < num_layers = ", num_layers), layer);
  const double factor = 1.0 - static_cast<double>(layer) / (num_layers - 1) + 1e-5;
  std::vector<double> g = alibi_slopes(heads);
  for (double& x : g) x = -x * factor;
  return g;
}

// RetNet: gamma_h = 1 - 2^(-5-h), g_h = log(gamma_h).
inline std::vector<double> retnet(int heads) {
  detail::check_argument(heads >= 1, "lcsm::decay::retnet", "heads", "heads >= 1", heads);
  std::vector<double> g(heads);
  for (int h = 0; h < heads; ++h) g[h] = std::log1p(-std::exp2(-5.0 - h));
  return g;
}

// No decay (plain linear attention): g_h = 0.
inline std::vector<double> none(int heads) { return std::vector<double>(heads, 0.0); }

}  // namespace lcsm::decay
