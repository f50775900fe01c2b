// Toeplitz coefficients built the TNN way (Qin et al., "Toeplitz Neural Network for Sequence
// Modeling", 2023): a small relative-position MLP ("Rpe") maps the normalised relative position
// r / normalizer to one value per channel, and an exponential decay bias gamma^|r| makes far
// positions fade:
//
//   a[c, r] = mlp(r / normalizer)[c] * gamma^|r|,
//   mlp = Linear(1 -> F) -> ReLU -> Linear(F -> F) -> ReLU -> ... -> Linear(F -> C).
//
// The weights are the caller's (views); the result fills a ToeplitzConvolution's coefficients,
// [C, n] (r = 0 .. n-1) or [C, 2n - 1] (r = -(n-1) .. n-1 at index r + n - 1). TNN's layer
// normalisation inside the Rpe is left out: fold it into the weights when evaluating a trained model.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "lcsm/core/error.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"

namespace lcsm::tnn {

// y = weight x + bias: weight [out, in], bias [out] (absent: no bias).
template <class T>
struct Linear {
  View<const T, 2> weight;
  View<const T, 1> bias;
};

template <class T>
struct RelativePositionMlp {
  std::vector<Linear<T>> layers;  // the first takes 1 input, the last gives C outputs; ReLU between
  double normalizer = 0;          // r is divided by it; 0 means n
  double gamma = 1;               // decay bias gamma^|r|, gamma in (0, 1]
};

// Writes a[c, r] for the causal (coefficients [C, n]) or bidirectional ([C, 2n - 1]) form.
template <class T>
void coefficients(const RelativePositionMlp<T>& mlp, bool causal, index_t n, View<T, 2> out) {
  const char* where = "lcsm::tnn::coefficients";
  detail::check_argument(n >= 1, where, "n", "n >= 1", n);
  detail::check_argument(!mlp.layers.empty(), where, "mlp.layers", "at least one layer", "none");
  detail::check_argument(mlp.gamma > 0 && mlp.gamma <= 1, where, "mlp.gamma", "gamma in (0, 1]", mlp.gamma);
  detail::check_argument(std::isfinite(mlp.normalizer) && mlp.normalizer >= 0, where, "mlp.normalizer",
                         "a finite value >= 0 (0: n)", mlp.normalizer);
  index_t width = 1;
  for (std::size_t i = 0; i < mlp.layers.size(); ++i) {
    const Linear<T>& l = mlp.layers[i];
    const std::string name = detail::concat("mlp.layers[", i, "].weight");
    detail::check_memory(where, name.c_str(), l.weight);
    detail::check_argument(l.weight.size(1) == width && l.weight.size(0) >= 1, where, name.c_str(),
                           detail::concat("[out, ", width, "] (the previous layer's width)"),
                           detail::dims_string<2>(l.weight.shape()));
    if (l.bias.present()) {
      const std::string bias = detail::concat("mlp.layers[", i, "].bias");
      detail::check_memory(where, bias.c_str(), l.bias);
      detail::check_shape(where, bias.c_str(), l.bias, {l.weight.size(0)}, "[out]");
    }
    width = l.weight.size(0);
  }
  detail::check_argument(causal || n <= detail::kIndexMax / 2, where, "n", "n <= 2^62 (2n - 1 coefficients)", n);
  const index_t count = causal ? n : 2 * n - 1;
  detail::check_output(where, "out", out);
  detail::check_shape(where, "out", out, {width, count}, causal ? "[C, n]" : "[C, 2n - 1]");
  // The aliasing rule, layer by layer (the weights and biases are inputs; names are built above).
  for (std::size_t i = 0; i < mlp.layers.size(); ++i) {
    const std::string w = detail::concat("mlp.layers[", i, "].weight"), b = detail::concat("mlp.layers[", i, "].bias");
    detail::Operands ops(where);
    ops.in(w.c_str(), mlp.layers[i].weight).in(b.c_str(), mlp.layers[i].bias).out("out", out);
    ops.check();
  }

  const double scale = 1.0 / (mlp.normalizer > 0 ? mlp.normalizer : static_cast<double>(n));
  const double log_gamma = std::log(mlp.gamma);
  std::vector<double> h, next;
  for (index_t i = 0; i < count; ++i) {
    const index_t r = causal ? i : i - (n - 1);
    h.assign(1, static_cast<double>(r) * scale);
    for (std::size_t k = 0; k < mlp.layers.size(); ++k) {
      const Linear<T>& l = mlp.layers[k];
      next.assign(static_cast<std::size_t>(l.weight.size(0)), 0.0);
      for (index_t o = 0; o < l.weight.size(0); ++o) {
        double acc = l.bias.present() ? static_cast<double>(l.bias(o)) : 0.0;
        for (index_t j = 0; j < l.weight.size(1); ++j) acc += static_cast<double>(l.weight(o, j)) * h[j];
        next[o] = k + 1 < mlp.layers.size() ? std::max(acc, 0.0) : acc;  // ReLU between layers
      }
      h.swap(next);
    }
    // exp(|r| log gamma) underflows to 0 far out; it never multiplies an infinity.
    const double decay = std::exp(static_cast<double>(r < 0 ? -r : r) * log_gamma);
    for (index_t c = 0; c < width; ++c) out(c, i) = static_cast<T>(h[c] * decay);
  }
}

}  // namespace lcsm::tnn
