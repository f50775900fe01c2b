// The cosFormer calls a backend runner provides to the shared suite (host tensors in and out).
// States are [N, H, 2K, V + 1] tensors of the state dtype.
#pragma once

#include "lcsm/ops/cosformer.hpp"
#include "support/backend.hpp"

namespace lcsm::test {

struct CosformerBackwardOut {
  Tensor* dq;
  Tensor* dk;
  Tensor* dv;
  Tensor* d_initial_state;  // may be null
};

class CosformerOps {
 public:
  virtual ~CosformerOps() = default;
  virtual void forward(const CosFormerAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                       const Tensor* initial_state, Tensor* final_state, const Offsets* cu_seqlens) = 0;
  virtual void step(const CosFormerAttention& op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                    Tensor& state) = 0;
  // Whether backward runs on this backend (the suite warns and skips where not).
  virtual bool has_backward() const { return true; }
  virtual void backward(const CosFormerAttention& op, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& d_o, const Tensor* initial_state, const Tensor* d_final_state,
                        const CosformerBackwardOut& out, const Offsets* cu_seqlens) = 0;
};

}  // namespace lcsm::test
