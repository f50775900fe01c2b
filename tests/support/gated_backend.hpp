// The gated recurrences' calls for the shared suite. Host tensors are rank 4: the gate (and its
// gradient) is [B, T, H, 1] for the scalar gate and [B, T, H, K] for the vector gate, in the state
// dtype (float for float inputs); the runner views the scalar gate as the operator's [B, T, H].
#pragma once

#include <optional>

#include "lcsm/core/precision.hpp"
#include "support/backend.hpp"

namespace lcsm::test {

enum class GateKind { scalar, vector };

inline const char* name(GateKind g) { return g == GateKind::scalar ? "scalar" : "vector"; }

// The descriptor's fields other than the gate (ScalarGatedAttention<T> etc. are per element type).
struct GatedSpec {
  GateKind kind = GateKind::scalar;
  std::optional<double> scale;
  index_t chunk = 64;
  index_t sub_chunk = 16;                  // vector gate only
  Precision precision = Precision::exact;  // tensor-core backends only
};

struct GatedBackwardOut {
  Tensor* dq;
  Tensor* dk;
  Tensor* dv;
  Tensor* d_initial_state;  // may be null
  Tensor* d_log_gate;       // may be null; the gate's shape
};

class GatedOps {
 public:
  virtual ~GatedOps() = default;
  virtual void forward(const GatedSpec& spec, const Tensor& log_gate, const Tensor& q, const Tensor& k, const Tensor& v,
                       Tensor& o, const Tensor* initial_state, Tensor* final_state, const Offsets* cu_seqlens) = 0;
  // Decode: log_gate covers the n tokens of q, k, v.
  virtual void step(const GatedSpec& spec, const Tensor& log_gate, const Tensor& q, const Tensor& k, const Tensor& v,
                    Tensor& o, Tensor& state) = 0;
  // Whether backward() serves this gate kind (the suite's backward cases of the other kind WARN).
  virtual bool has_backward(GateKind) const { return true; }
  virtual void backward(const GatedSpec& spec, const Tensor& log_gate, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& d_o, const Tensor* initial_state, const Tensor* d_final_state,
                        const GatedBackwardOut& out, const Offsets* cu_seqlens) = 0;
};

}  // namespace lcsm::test
