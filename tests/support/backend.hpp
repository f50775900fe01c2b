// What a backend runner provides to the shared suite. Tensors are host tensors; a GPU backend
// copies them to the device (keeping their strides, and the NaN poison of outputs) and back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lcsm/core/sequences.hpp"
#include "lcsm/ops/lightning.hpp"
#include "support/host_tensor.hpp"

namespace lcsm::test {

// cu_seqlens held by the test, as int32 or int64.
struct Offsets {
  std::vector<std::int32_t> i32;
  std::vector<std::int64_t> i64;
  bool use64 = false;

  static Offsets from_lengths(const std::vector<index_t>& lengths, bool use64) {
    Offsets o;
    o.use64 = use64;
    index_t acc = 0;
    o.i64.push_back(0);
    for (index_t l : lengths) o.i64.push_back(acc += l);
    for (auto x : o.i64) o.i32.push_back(static_cast<std::int32_t>(x));
    return o;
  }
  CuSeqlens view() const {
    return use64 ? CuSeqlens(i64.data(), static_cast<index_t>(i64.size()))
                 : CuSeqlens(i32.data(), static_cast<index_t>(i32.size()));
  }
  index_t total() const { return i64.back(); }
  index_t count() const { return static_cast<index_t>(i64.size()) - 1; }
};

struct LightningBackwardOut {
  Tensor* dq;
  Tensor* dk;
  Tensor* dv;
  Tensor* d_initial_state;           // may be null
  std::vector<double>* d_log_decay;  // may be null; [H]
};

// The operator families beyond lightning attention, each declared in its own
// support/<family>_backend.hpp and implemented by a runner in its own file.
class GatedOps;
class CosformerOps;
class ToeplitzOps;
class Probe;  // support/probe.hpp: calls over one arena, for the argument checks

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual std::vector<Dtype> dtypes() const = 0;
  // Whether op.chunk selects the algorithm's block size (CPU) or is ignored (CUDA picks tiles).
  virtual bool honours_chunk() const = 0;
  virtual bool has_backward() const = 0;
  // The relative error of one fp32 product on this backend, where it exceeds the float's own
  // rounding (0): tensor-core backends form it from bf16 pieces (about 2^-16 each, 2^-15 through
  // a state). Bounds that count every term's magnitude (the decay gradients) allow for it.
  virtual double product_error() const { return 0.0; }

  virtual void lightning_forward(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v,
                                 Tensor& o, const Tensor* initial_state, Tensor* final_state,
                                 const Offsets* cu_seqlens) = 0;
  virtual void lightning_step(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v,
                              Tensor& o, Tensor& state) = 0;
  virtual void lightning_backward(const LightningAttention& op, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& d_o, const Tensor* initial_state, const Tensor* d_final_state,
                                  const LightningBackwardOut& out, const Offsets* cu_seqlens) = 0;

  // The other families: null where this backend does not have them yet (their cases then WARN and
  // check nothing on it).
  virtual GatedOps* gated() { return nullptr; }
  virtual CosformerOps* cosformer() { return nullptr; }
  virtual ToeplitzOps* toeplitz() { return nullptr; }
  virtual Probe* probe() { return nullptr; }
};

// Defined once per runner executable.
Backend& backend();

}  // namespace lcsm::test
