// cosFormer's backward on the engine, through its EOS instance: with u = [phi(q) cos, phi(q) sin],
// w = [phi(k) cos, phi(k) sin] (2K columns each) and the values [v, 1] (V + 1 columns), the
// numerator and the denominator are one linear attention, [num, den] = LA(u, w, [v, 1]) from the
// [2K, V + 1] initial state. So the backward is
//   1. the fp32 features (cosine_features_kernel);
//   2. [num, den] recomputed by the engine's forward with no decay (lightning's, scale 1);
//   3. their gradients [g, e] (cosine_output_grads_kernel): g = dO / max(den, eps), e = -(dO . o) /
//      max(den, eps), 0 where the clamp is active;
//   4. du, dw, d[v, 1] and the initial state's gradient: causal, lightning's backward over the
//      features (chunked/backward.cuh, its three engine passes); non-causal, every token reads the
//      whole sums S = S0 + sum w^T [v, 1], so du = [g, e] S^T, dS = dS_final + sum u^T [g, e],
//      dw = [v, 1] dS^T, d[v, 1] = w dS: six engine forwards with a zero operand in place of the
//      keys (the outputs then read only the initial state) or of the queries (only the final state
//      counts);
//   5. dq = phi'(q) (.) (du_cos cos + du_sin sin), dk likewise, dv (cosine_gradients_kernel).
// Features and gradients are fp32 whatever the inputs (the engine's fp32 path: hi + lo in exact
// mode), so the gradients keep fp32 accuracy up to their own rounding. The price is memory: 4 x 2K
// + 3 x (V + 1) floats per token and head (rows padded to 4 floats: 5.7 KB at K = V = 128; non-
// causal calls also two [N, H, 2K, V + 1] sums), where the forward's feature policy
// (cosine_sm80.cuh) forms nothing; docs/decisions.md says why and what would replace it.
// Host code.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lcsm/cuda/chunked/backward.cuh"
#include "lcsm/cuda/chunked/cosine_backward_kernels.cuh"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/error.cuh"

namespace lcsm::cuda::detail {

// The feature problem: 2K keys, V + 1 values.
inline ProblemShape cosine_feature_shape(const ProblemShape& s) {
  return {s.batch, s.time, s.heads, 2 * s.key_dim, s.value_dim + 1, s.sequences};
}

// Feature rows padded to 4 floats (16 bytes: the engine's vector loads).
inline int padded_row(std::int64_t width) { return static_cast<int>((width + 3) / 4 * 4); }

// The scratch of a cosFormer backward call, region by region (bytes, 256-byte multiples).
struct CosineBackwardPlan {
  int key_row = 0, value_row = 0;  // floats per feature row: 2K and V + 1, padded
  std::size_t keys = 0;            // one [B, T, H, 2K] fp32 region: u, w, du, dw
  std::size_t values = 0;          // one [B, T, H, V + 1] fp32 region: [v, 1], [num, den] -> [g, e], d[v, 1]
  std::size_t sums = 0;            // non-causal: S, [N, H, 2K, V + 1] fp32
  std::size_t d_sums = 0;          // non-causal without a d_initial view to hold it: dS, as S
  std::size_t zeros = 0;           // non-causal: one zero row, the zero operand
  ChunkPlan forward;               // the engine's forward over the features
  ChunkPlan swapped;               // non-causal: over V + 1 keys and 2K values (du, dw)
  BackwardPlan backward;           // causal: lightning's backward over the features
  std::size_t engine = 0;          // the engine's scratch: the largest of the three
  std::size_t bytes() const { return 4 * keys + 3 * values + sums + d_sums + zeros + engine; }
};

inline CosineBackwardPlan plan_cosine_backward(const ProblemShape& s, bool varlen, bool causal, bool d_final,
                                               bool d_initial) {
  const ProblemShape f = cosine_feature_shape(s);
  const auto floats = [](std::int64_t count) { return round_up_256(static_cast<std::size_t>(count) * sizeof(float)); };
  CosineBackwardPlan b;
  b.key_row = padded_row(f.key_dim);
  b.value_row = padded_row(f.value_dim);
  b.keys = floats(f.batch * f.time * f.heads * b.key_row);
  b.values = floats(f.batch * f.time * f.heads * b.value_row);
  b.forward = plan_forward<DecayKind::head>(f, varlen);
  b.engine = b.forward.workspace_bytes();
  if (causal) {
    b.backward = plan_backward<DecayKind::head>(f, varlen, d_final, false, true, false);
    b.engine = std::max(b.engine, b.backward.bytes());
  } else {
    b.sums = floats(f.sequences * f.heads * f.key_dim * f.value_dim);
    b.d_sums = d_initial ? 0 : b.sums;
    b.zeros = floats(std::max(b.key_row, b.value_row));
    b.swapped = plan_forward<DecayKind::head>(swapped_dims(f), varlen);
    b.engine = std::max(b.engine, b.swapped.workspace_bytes());
  }
  return b;
}

// c: the checked call (its shape the cosFormer one: K, V); cosine: params carrying the call's
// positions, M, eps and feature map (set_cosine).
template <class T>
void run_cosine_backward(const BackwardCall<T>& c, const RecurrenceParams& cosine, bool causal,
                         const CosineBackwardPlan& plan, const Device& device) {
  const ProblemShape& s = c.shape;
  const ProblemShape f = cosine_feature_shape(s), fs = swapped_dims(f);
  const cudaStream_t stream = device.stream;
  char* next = static_cast<char*>(device.workspace.data);
  const auto take = [&](std::size_t bytes) -> float* {
    auto* region = bytes ? reinterpret_cast<float*>(next) : nullptr;
    next += bytes;
    return region;
  };
  CosineFeatures x{};
  x.key_row = plan.key_row;
  x.value_row = plan.value_row;
  x.u = take(plan.keys);
  x.w = take(plan.keys);
  x.du = take(plan.keys);
  x.dw = take(plan.keys);
  x.values = take(plan.values);
  x.outputs = take(plan.values);
  x.dvalues = take(plan.values);
  float* sums = take(plan.sums);
  float* d_sums = take(plan.d_sums);
  float* zeros = take(plan.zeros);
  const Device engine{stream, {take(plan.engine), plan.engine}, device.kernels};

  // The call's own views for the per-token kernels (o: dq), with cosFormer's fields.
  RecurrenceParams p = make_params(c.q, c.k, c.v, c.dq, 1.0, s);
  p.cu_seqlens = c.cu.present() ? c.cu.data() : nullptr;
  p.cu_seqlens_int64 = c.cu.is_int64();
  p.positions = cosine.positions;
  p.cos_length = cosine.cos_length;
  p.eps = cosine.eps;
  p.relu = cosine.relu;
  const unsigned blocks = grid_of(s.batch * s.time * s.heads, kBackwardThreads / 32);
  cosine_features_kernel<T><<<blocks, kBackwardThreads, 0, stream>>>(p, x);
  LCSM_CUDA_CHECK(cudaGetLastError());

  const auto rows = [&](float* data, std::int64_t width, std::int64_t row) {
    return lcsm::view(data, {f.batch, f.time, f.heads, width}, {f.time * f.heads * row, f.heads * row, row, 1});
  };
  const auto keys = [&](float* data) { return rows(data, f.key_dim, plan.key_row); };
  const auto values = [&](float* data) { return rows(data, f.value_dim, plan.value_row); };
  const auto gradients = [&] {  // [num, den] -> [g, e]
    RecurrenceParams grads = p;
    grads.o = const_cast<T*>(c.d_o.data());  // read only
    grads.so = strides_of(c.d_o);
    cosine_output_grads_kernel<T><<<blocks, kBackwardThreads, 0, stream>>>(grads, x);
    LCSM_CUDA_CHECK(cudaGetLastError());
  };

  if (causal) {
    RecurrenceParams fw = make_params<float>(keys(x.u), keys(x.w), values(x.values), values(x.outputs), 1.0, f);
    set_states(fw, {c.states.initial, {}}, c.cu);
    run_forward<float, DecayKind::head>(fw, plan.forward, engine, c.precision);
    gradients();
    const std::vector<double> no_decay(static_cast<std::size_t>(s.heads), 0.0);
    BackwardDecay decay;
    decay.log_decay = &no_decay;
    run_backward<float, DecayKind::head>({keys(x.u), keys(x.w), values(x.values), values(x.outputs), keys(x.du),
                                          keys(x.dw), values(x.dvalues), c.states, c.cu, 1.0, c.precision, f},
                                         decay, plan.backward, engine);
  } else {
    LCSM_CUDA_CHECK(cudaMemsetAsync(zeros, 0, plan.zeros, stream));
    // Every row the same zero row (unit inner stride: the passes keep their vector loads).
    const View<const float, 4> zero_keys(zeros, keys(zeros).shape(), {0, 0, 0, 1});
    const View<const float, 4> zero_values(zeros, values(zeros).shape(), {0, 0, 0, 1});
    // One engine forward over the features: outputs from the initial state and the tokens, the
    // final state when asked (swapped: V + 1 keys, 2K values).
    const auto pass = [&](View<const float, 4> q, View<const float, 4> k, View<const float, 4> v, View<float, 4> o,
                          const float* initial, Strides4 s_initial, float* final_state, Strides4 s_final,
                          bool swapped) {
      RecurrenceParams e = make_params<float>(q, k, v, o, 1.0, swapped ? fs : f);
      e.cu_seqlens = p.cu_seqlens;
      e.cu_seqlens_int64 = p.cu_seqlens_int64;
      e.initial_state = initial;
      e.s_initial = s_initial;
      e.final_state = final_state;
      e.s_final = s_final;
      run_forward<float, DecayKind::head>(e, swapped ? plan.swapped : plan.forward, engine, c.precision);
    };
    const Strides4 whole = contiguous_strides(f.heads, f.key_dim, f.value_dim);
    const auto transposed = [](Strides4 t) {
      std::swap(t.s2, t.s3);
      return t;
    };
    // dS lands in d_initial when the caller wants it (it is that gradient), else in the workspace.
    float* d_whole = c.states.d_initial.present() ? c.states.d_initial.data() : d_sums;
    const Strides4 sd = c.states.d_initial.present() ? strides_of(c.states.d_initial) : whole;
    const View<float, 4> scratch = values(x.dvalues);  // the passes that want only a final state write here

    // S = S0 + sum w^T [v, 1]; [num, den] = u S.
    pass(zero_keys, keys(x.w), values(x.values), scratch,
         c.states.initial.present() ? c.states.initial.data() : nullptr, strides_of(c.states.initial), sums, whole,
         false);
    pass(keys(x.u), zero_keys, zero_values, values(x.outputs), sums, whole, nullptr, {}, false);
    gradients();
    // dS = dS_final + sum u^T [g, e]; du = [g, e] S^T; dw = [v, 1] dS^T; d[v, 1] = w dS.
    pass(zero_keys, keys(x.u), values(x.outputs), scratch,
         c.states.d_final.present() ? c.states.d_final.data() : nullptr, strides_of(c.states.d_final), d_whole, sd,
         false);
    pass(values(x.outputs), zero_values, zero_keys, keys(x.du), sums, transposed(whole), nullptr, {}, true);
    pass(values(x.values), zero_values, zero_keys, keys(x.dw), d_whole, transposed(sd), nullptr, {}, true);
    pass(keys(x.w), zero_keys, zero_values, values(x.dvalues), d_whole, sd, nullptr, {}, false);
  }

  cosine_gradients_kernel<T><<<blocks, kBackwardThreads, 0, stream>>>(
      p, x, CosineGradientOutputs<T>{c.dk.data(), c.dv.data(), strides_of(c.dk), strides_of(c.dv)});
  LCSM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lcsm::cuda::detail
