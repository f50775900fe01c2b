// The Toeplitz long convolution's calls for the shared suite. Host tensors are rank 4: x, y, dx,
// dy are [B, n, C, 1] (strides as given, so [B, C, n] memory works), coefficients and da
// [C, count, 1, 1]; the runner views them as the operator's [B, n, C] and [C, count].
#pragma once

#include "support/backend.hpp"

namespace lcsm::test {

// The descriptor's fields other than the coefficients (ToeplitzConvolution<T> is per element type).
struct ToeplitzSpec {
  bool causal = true;
  enum class Path { automatic, fft, direct };
  Path path = Path::automatic;
  index_t direct_max_length = 48;  // automatic: direct up to this n (bidirectional: half)
};

class ToeplitzOps {
 public:
  virtual ~ToeplitzOps() = default;
  virtual void forward(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x, Tensor& y,
                       const Offsets* cu_seqlens) = 0;
  // dx, da may be null (not asked for).
  virtual void backward(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x, const Tensor& dy,
                        Tensor* dx, Tensor* da, const Offsets* cu_seqlens) = 0;
  // Decode m tokens x_t [B, m, C, 1] -> y_t, with history [B, n_max, C, 1] holding `position`
  // tokens; advances position.
  virtual void step(const ToeplitzSpec& spec, const Tensor& coefficients, const Tensor& x_t, Tensor& y_t,
                    Tensor& history, index_t& position) = 0;
};

}  // namespace lcsm::test
