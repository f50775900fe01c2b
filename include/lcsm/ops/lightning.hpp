// Lightning attention: linear attention with a constant per-head decay (Lightning Attention-2,
// TNL, MiniMax-01 linear layers, RetNet's retention).
//
//   S_0 = initial state,  S_t = lambda_h S_{t-1} + k_t v_t^T,  o_t = scale * S_t^T q_t,
//   lambda_h = exp(g_h), g_h <= 0.
//
// As an EOS instance: shrink s = scale * q, expand e = k, input i = v, oscillation `head`.
#pragma once

#include <cmath>
#include <optional>
#include <vector>

#include "lcsm/core/decay.hpp"
#include "lcsm/core/error.hpp"
#include "lcsm/core/precision.hpp"
#include "lcsm/core/tensor.hpp"

namespace lcsm {

struct LightningAttention {
  // g_h = log(lambda_h) per head, all in [lcsm::decay::min_log, 0] = [-1000, 0]; lcsm::decay builds the
  // usual ones. The size
  // must equal H (use lcsm::decay::none(H) for plain linear attention).
  std::vector<double> log_decay;
  // Multiplies q; 1/sqrt(K) when unset. MiniMax-01 uses 1.
  std::optional<double> scale;
  // Tokens per block of the chunked algorithm (CPU backend; the CUDA kernels pick their own tile).
  index_t chunk = 64;
  // Tensor-core backends: exact (default) or fast rounding of the products (core/precision.hpp).
  using Precision = lcsm::Precision;
  Precision precision = Precision::exact;

  double scale_for(index_t key_dim) const { return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(key_dim)); }

  // Throws lcsm::Error for a descriptor that does not fit H heads.
  void check(const char* where, index_t heads) const {
    detail::check_argument(static_cast<index_t>(log_decay.size()) == heads, where, "op.log_decay",
                           detail::concat(heads, " per-head log-decays (H = ", heads, ")"),
                           detail::concat(log_decay.size(), " values"));
    for (std::size_t h = 0; h < log_decay.size(); ++h)
      if (!(log_decay[h] >= decay::min_log && log_decay[h] <= 0))
        detail::throw_argument(where, "op.log_decay",
                               "-1000 <= g <= 0 (lambda = exp(g) in [0, 1]; exp(-1000) is already 0: clamp "
                               "stronger decays to lcsm::decay::min_log)",
                               detail::concat("g[", h, "] = ", log_decay[h]));
    if (scale && !std::isfinite(*scale)) detail::throw_argument(where, "op.scale", "a finite scale", *scale);
    detail::check_argument(chunk >= 1 && chunk <= 1024, where, "op.chunk", "1 <= chunk <= 1024", chunk);
  }
};

}  // namespace lcsm
