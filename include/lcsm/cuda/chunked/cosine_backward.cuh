// cosFormer's backward on the engine, through its EOS instance: with u = [phi(q) cos, phi(q) sin],
// w = [phi(k) cos, phi(k) sin] (2K columns each), the numerator is one linear attention,
// num = LA(u, w, v) from the [2K, V] part of the initial state, and the denominator den_t =
// u_t . Z_t with Z_t the key sums (column V of the state; non-causal: the whole sequence's). So the
// backward is
//   1. the tokens' angles and the features, fp32 (bf16 in fast mode) (cosine_angles_kernel,
//      cosine_features_kernel);
//   2. num recomputed: causal, by the forward's own kernel writing the numerator undivided
//      (RecurrenceParams::cos_numerator); non-causal, by the engine's forward with no decay
//      (lightning's, scale 1) below; Z by a scan over time (cosine_key_sums_kernel,
//      cosine_carry_kernel);
//   3. den, and the gradients g = dO / max(den, eps), e = -(dO . o) / max(den, eps), 0 where the
//      clamp is active (cosine_denominators_kernel);
//   4. du, dw, dv and the initial state's gradient from g: causal, lightning's backward over the
//      features (chunked/backward.cuh, its three engine passes), once for the cos half of the
//      features and once for the sin half (num is the sum of the two halves' linear attentions:
//      two problems of K keys take the K <= 128 tiles, the sm_90a kernel in fast mode, where one of
//      2K keys takes the mma.sync kernel's K = 256 tile), their dv summed; non-causal, every token reads the
//      whole sums S = S0 + sum w^T v, so du = g S^T, dS = dS_final + sum u^T g, dw = v dS^T,
//      dv = w dS: six engine forwards with a zero operand in place of the keys (the outputs then
//      read only the initial state) or of the queries (only the final state counts);
//   5. e's share, du_t += e_t Z_t and dw_j += dz_final + sum_{t >= j} e_t u_t (all t non-causal),
//      by the same scans, and dq = phi'(q) (.) (du_cos cos + du_sin sin), dk likewise, dv
//      (cosine_gradients_kernel).
// The normaliser's column never enters the engine: the passes keep V value columns (V + 1 would
// cost a third block of value columns, or the K = 256 tile where K and V swap).
// In exact mode features and gradients are fp32 whatever the inputs (the engine's fp32 path: hi +
// lo products), so the gradients keep fp32 accuracy up to their own rounding; fast mode rounds them
// to bf16 (one product per MMA, and the sm_90a kernel where the passes swap K and V), the scans and
// e staying fp32 and double. The price is memory: 4 x 2K + 4 x V feature elements (3 x V non-causal)
// and a float per token and head, and each token's angle (rows padded to 16 bytes: 6 KB at K = V =
// 128 exact, 3 KB fast; non-causal calls also two [N, H, 2K, V] fp32 sums), where the forward's
// feature policy (cosine_sm80.cuh) forms nothing; docs/decisions.md says why and what would
// replace it.
// Host code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lcsm/cuda/chunked/backward.cuh"
#include "lcsm/cuda/chunked/cosine_backward_kernels.cuh"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/error.cuh"

namespace lcsm::cuda::detail {

// The feature problem: 2K keys, V values (the normaliser's column is scanned apart).
inline ProblemShape cosine_feature_shape(const ProblemShape& s) {
  return {s.batch, s.time, s.heads, 2 * s.key_dim, s.value_dim, s.sequences};
}

// Feature rows padded to 16 bytes (the engine's vector loads): elements of `size` bytes.
inline int padded_row(std::int64_t width, std::size_t size) {
  const std::int64_t per = 16 / static_cast<std::int64_t>(size);
  return static_cast<int>((width + per - 1) / per * per);
}

// Slices of time per sequence for the normaliser's scans: about 4096 warps in all (enough to stream
// at the card's bandwidth), slices of at least 64 tokens of the mean sequence, at most 256.
inline int cosine_parts(const ProblemShape& s) {
  const std::int64_t pairs = std::max<std::int64_t>(1, s.sequences * s.heads);
  const std::int64_t mean = s.sequences > 0 ? s.batch * s.time / s.sequences : 0;
  const std::int64_t parts = std::min<std::int64_t>({256, (4096 + pairs - 1) / pairs, mean / 64});
  return static_cast<int>(std::max<std::int64_t>(1, parts));
}

// The scratch of a cosFormer backward call, region by region (bytes, 256-byte multiples).
struct CosineBackwardPlan {
  bool bf16 = false;               // the features in bf16 (fast mode), else fp32
  int key_row = 0, value_row = 0;  // elements per feature row: 2K and V, padded
  int parts = 1;                   // slices of time per sequence (cosine_parts)
  std::size_t keys = 0;            // one [B, T, H, 2K] feature region: u, w, du, dw
  std::size_t values = 0;          // one [B, T, H, V] feature region: v, num -> g, dv (causal: two)
  std::size_t tokens = 0;          // e [B, T, H] fp32
  std::size_t angles = 0;          // (cos, sin) [B, T] fp32
  std::size_t slices = 0;          // one [N, parts, H, 2K] double region: Z's and R's slices
  std::size_t sums = 0;            // non-causal: S, [N, H, 2K, V] fp32
  std::size_t d_sums = 0;          // non-causal without a d_initial view to hold it: dS, as S
  std::size_t zeros = 0;           // non-causal: one zero row, the zero operand
  ChunkPlan numerator;             // causal: the cosFormer kernel's forward, writing the numerator
  ChunkPlan forward;               // the engine's forward over the features
  ChunkPlan swapped;               // non-causal: over V keys and 2K values (du, dw)
  BackwardPlan backward;           // causal: lightning's backward over the features
  std::size_t engine = 0;          // the engine's scratch: the largest of the three
  bool causal = false;
  std::size_t bytes() const {
    return 4 * keys + (causal ? 4 : 3) * values + tokens + angles + 2 * slices + sums + d_sums + zeros + engine;
  }
};

// precision: fast runs the features in bf16 (the passes then take the bf16 kernels: one product per
// MMA, the sm_90a kernel where K and V swap), exact in fp32 (hi + lo products).
inline CosineBackwardPlan plan_cosine_backward(const ProblemShape& s, bool varlen, bool causal, bool d_final,
                                               bool d_initial, Precision precision) {
  const ProblemShape f = cosine_feature_shape(s);
  const auto bytes = [](std::int64_t count, std::size_t size) {
    return round_up_256(static_cast<std::size_t>(count) * size);
  };
  CosineBackwardPlan b;
  b.bf16 = precision == Precision::fast;
  b.causal = causal;
  const std::size_t element = b.bf16 ? 2 : sizeof(float);
  b.key_row = padded_row(f.key_dim, element);
  b.value_row = padded_row(f.value_dim, element);
  b.parts = cosine_parts(s);
  b.keys = bytes(f.batch * f.time * f.heads * b.key_row, element);
  b.values = bytes(f.batch * f.time * f.heads * b.value_row, element);
  b.tokens = bytes(f.batch * f.time * f.heads, sizeof(float));
  b.angles = bytes(f.batch * f.time, sizeof(float2));
  b.slices = bytes(f.sequences * b.parts * f.heads * f.key_dim, sizeof(double));
  b.forward = plan_forward<DecayKind::head>(f, varlen);
  b.engine = b.forward.workspace_bytes();
  if (causal) {
    b.numerator = plan_forward<DecayKind::cosine>(s, varlen);
    b.backward = plan_backward<DecayKind::head>(s, varlen, d_final, false, !b.bf16, false);  // one half
    b.engine = std::max({b.engine, b.numerator.workspace_bytes(), b.backward.bytes()});
  } else {
    b.sums = bytes(f.sequences * f.heads * f.key_dim * f.value_dim, sizeof(float));
    b.d_sums = d_initial ? 0 : b.sums;
    b.zeros = bytes(std::max(b.key_row, b.value_row), element);
    b.swapped = plan_forward<DecayKind::head>(swapped_dims(f), varlen);
    b.engine = std::max(b.engine, b.swapped.workspace_bytes());
  }
  return b;
}

// The first V columns of a cosFormer state view [N, H, 2K, V + 1] (the numerator's state), and the
// column-V pointer of one (the key sums; absent: null).
template <class S>
View<S, 4> numerator_columns(const View<S, 4>& x, std::int64_t V) {
  if (x.absent()) return x;
  return View<S, 4>(x.data(), {x.size(0), x.size(1), x.size(2), V}, x.strides());
}
template <class S>
S* key_sums_column(const View<S, 4>& x, std::int64_t V) {
  return x.present() ? x.data() + V * x.stride(3) : nullptr;
}
// Rows [first, first + count) of a state view [N, H, rows, V] (absent stays absent).
template <class S>
View<S, 4> state_rows(const View<S, 4>& x, std::int64_t first, std::int64_t count) {
  if (x.absent()) return x;
  return View<S, 4>(x.data() + first * x.stride(2), {x.size(0), x.size(1), count, x.size(3)}, x.strides());
}

// c: the checked call (its shape the cosFormer one: K, V); cosine: params carrying the call's
// positions, M, eps and feature map (set_cosine); F: the features' type (plan.bf16).
template <class T, class F>
void run_cosine_backward_as(const BackwardCall<T>& c, const RecurrenceParams& cosine, bool causal,
                            const CosineBackwardPlan& plan, const Device& device) {
  const ProblemShape& s = c.shape;
  const ProblemShape f = cosine_feature_shape(s), fs = swapped_dims(f);
  const cudaStream_t stream = device.stream;
  char* next = static_cast<char*>(device.workspace.data);
  const auto take = [&](std::size_t bytes) -> void* {
    void* region = bytes ? next : nullptr;
    next += bytes;
    return region;
  };
  const auto take_features = [&](std::size_t bytes) { return static_cast<F*>(take(bytes)); };
  CosineFeatures x{};
  x.key_row = plan.key_row;
  x.value_row = plan.value_row;
  F* u = take_features(plan.keys);
  F* w = take_features(plan.keys);
  F* du = take_features(plan.keys);
  F* dw = take_features(plan.keys);
  F* values_in = take_features(plan.values);
  F* outputs = take_features(plan.values);
  F* dvalues = take_features(plan.values);
  F* dvalues_sin = plan.causal ? take_features(plan.values) : nullptr;  // the sin half's dv
  x.u = u, x.w = w, x.du = du, x.dw = dw;
  x.values = values_in, x.outputs = outputs, x.dvalues = dvalues, x.dvalues_sin = dvalues_sin;
  x.e = static_cast<float*>(take(plan.tokens));
  auto* angles = static_cast<float2*>(take(plan.angles));
  auto* z_slices = static_cast<double*>(take(plan.slices));
  auto* r_slices = static_cast<double*>(take(plan.slices));
  auto* sums = static_cast<float*>(take(plan.sums));
  auto* d_sums = static_cast<float*>(take(plan.d_sums));
  F* zeros = take_features(plan.zeros);
  const Device engine{stream, {take(plan.engine), plan.engine}, device.kernels};

  // The call's own views for the per-token kernels (o: dq), with cosFormer's fields.
  RecurrenceParams p = make_params(c.q, c.k, c.v, c.dq, 1.0, s);
  p.cu_seqlens = c.cu.present() ? c.cu.data() : nullptr;
  p.cu_seqlens_int64 = c.cu.is_int64();
  p.positions = cosine.positions;
  p.cos_length = cosine.cos_length;
  p.eps = cosine.eps;
  p.relu = cosine.relu;
  const std::int64_t tokens = s.batch * s.time;
  cosine_angles_kernel<><<<grid_of(tokens, kBackwardThreads), kBackwardThreads, 0, stream>>>(p, angles);
  LCSM_CUDA_CHECK(cudaGetLastError());
  cosine_features_kernel<T, F><<<grid_of(tokens, kBackwardThreads / 32), kBackwardThreads, 0, stream>>>(p, x, angles);
  LCSM_CUDA_CHECK(cudaGetLastError());

  // The normaliser's scans: one warp per slice, one thread per state column between them.
  const int parts = plan.parts;
  const unsigned slice_blocks =
      grid_size((s.sequences * s.heads * parts + kBackwardThreads / 32 - 1) / (kBackwardThreads / 32),
                "(sequence, head, slice) triples");
  const unsigned column_blocks =
      grid_size((s.sequences * s.heads * 2 * s.key_dim + kBackwardThreads - 1) / kBackwardThreads, "state columns");
  const std::int64_t V = s.value_dim;
  const auto carry = [&](double* slices, const View<const float, 4>& base, const View<float, 4>& total,
                         SliceCarry how) {
    const CosineColumn col{key_sums_column(base, V), strides_of(base), key_sums_column(total, V), strides_of(total)};
    cosine_carry_kernel<><<<column_blocks, kBackwardThreads, 0, stream>>>(p, parts, slices, col, how);
    LCSM_CUDA_CHECK(cudaGetLastError());
  };
  // Z: the key sums each slice starts from (z_0 from the initial state's column V).
  cosine_key_sums_kernel<T><<<slice_blocks, kBackwardThreads, 0, stream>>>(p, parts, z_slices, angles);
  LCSM_CUDA_CHECK(cudaGetLastError());
  carry(z_slices, c.states.initial, {}, causal ? SliceCarry::forward : SliceCarry::whole);

  const auto rows = [&](F* data, std::int64_t width, std::int64_t row) {
    return lcsm::view(data, {f.batch, f.time, f.heads, width}, {f.time * f.heads * row, f.heads * row, row, 1});
  };
  const auto keys = [&](F* data) { return rows(data, f.key_dim, plan.key_row); };
  const auto values = [&](F* data) { return rows(data, f.value_dim, plan.value_row); };
  // num -> g, e; then R: the e-terms each slice starts from (dz_final from the d_final's column V),
  // and the initial state's column V.
  const auto denominators = [&] {
    RecurrenceParams grads = p;
    grads.o = const_cast<T*>(c.d_o.data());  // read only
    grads.so = strides_of(c.d_o);
    cosine_denominators_kernel<T, F>
        <<<slice_blocks, kBackwardThreads, 0, stream>>>(grads, x, parts, z_slices, r_slices, causal, angles);
    LCSM_CUDA_CHECK(cudaGetLastError());
    carry(r_slices, c.states.d_final, c.states.d_initial, causal ? SliceCarry::backward : SliceCarry::whole);
  };
  const StateGrads<float> states{numerator_columns(c.states.initial, V), numerator_columns(c.states.d_final, V),
                                 numerator_columns(c.states.d_initial, V)};

  if (causal) {
    if constexpr (std::is_same_v<F, float> || std::is_same_v<F, T>) {
      // num by the forward's own kernel (phi and the angles on load, the state's 2K rows and the
      // normaliser as its policy), writing the numerator undivided, fp32 unless F is T.
      RecurrenceParams nf = make_params(c.q, c.k, c.v, c.dv, 1.0, s);
      set_states(nf, {c.states.initial, {}}, c.cu);
      nf.positions = cosine.positions;
      nf.cos_length = cosine.cos_length;
      nf.eps = cosine.eps;
      nf.relu = cosine.relu;
      nf.cos_numerator = true;
      const View<F, 4> num = values(outputs);
      nf.o = num.data();
      nf.so = strides_of(num);
      nf.out_float = !std::is_same_v<F, T>;
      nf.vectorized = rows_are_16_byte_aligned<T>(c.q) && rows_are_16_byte_aligned<T>(c.k) &&
                      rows_are_16_byte_aligned<T>(c.v);  // the feature rows are
      run_forward<T, DecayKind::cosine>(nf, plan.numerator, engine, c.precision);
    } else {  // 16-bit inputs other than bf16 with bf16 features: the engine over the features
      RecurrenceParams fw = make_params<F>(keys(u), keys(w), values(values_in), values(outputs), 1.0, f);
      set_states(fw, {states.initial, {}}, c.cu);
      run_forward<F, DecayKind::head>(fw, plan.forward, engine, c.precision);
    }
    denominators();
    const std::vector<double> no_decay(static_cast<std::size_t>(s.heads), 0.0);
    BackwardDecay decay;
    decay.log_decay = &no_decay;
    const std::int64_t K = s.key_dim;
    const auto half = [&](F* data, int h) { return rows(data + h * K, K, plan.key_row); };
    for (int h = 0; h < 2; ++h) {  // the cos half (state rows [0, K)), then the sin half ([K, 2K))
      const StateGrads<float> half_states{state_rows(states.initial, h * K, K), state_rows(states.d_final, h * K, K),
                                          state_rows(states.d_initial, h * K, K)};
      run_backward<F, DecayKind::head>(
          {half(u, h), half(w, h), values(values_in), values(outputs), half(du, h), half(dw, h),
           values(h == 0 ? dvalues : dvalues_sin), half_states, c.cu, 1.0, c.precision, s},
          decay, plan.backward, engine);
    }
  } else {
    LCSM_CUDA_CHECK(cudaMemsetAsync(zeros, 0, plan.zeros, stream));
    // Every row the same zero row (unit inner stride: the passes keep their vector loads).
    const View<const F, 4> zero_keys(zeros, keys(zeros).shape(), {0, 0, 0, 1});
    const View<const F, 4> zero_values(zeros, values(zeros).shape(), {0, 0, 0, 1});
    // One engine forward over the features: outputs from the initial state and the tokens, the
    // final state when asked (swapped: V keys, 2K values).
    const auto pass = [&](View<const F, 4> q, View<const F, 4> k, View<const F, 4> v, View<F, 4> o,
                          const float* initial, Strides4 s_initial, float* final_state, Strides4 s_final,
                          bool swapped) {
      RecurrenceParams e = make_params<F>(q, k, v, o, 1.0, swapped ? fs : f);
      e.cu_seqlens = p.cu_seqlens;
      e.cu_seqlens_int64 = p.cu_seqlens_int64;
      e.initial_state = initial;
      e.s_initial = s_initial;
      e.final_state = final_state;
      e.s_final = s_final;
      run_forward<F, DecayKind::head>(e, swapped ? plan.swapped : plan.forward, engine, c.precision);
    };
    const Strides4 whole = contiguous_strides(f.heads, f.key_dim, f.value_dim);
    const auto transposed = [](Strides4 t) {
      std::swap(t.s2, t.s3);
      return t;
    };
    // dS lands in d_initial when the caller wants it (it is that gradient), else in the workspace.
    float* d_whole = states.d_initial.present() ? states.d_initial.data() : d_sums;
    const Strides4 sd = states.d_initial.present() ? strides_of(states.d_initial) : whole;
    const View<F, 4> scratch = values(dvalues);  // the passes that want only a final state write here

    // S = S0 + sum w^T v; num = u S.
    pass(zero_keys, keys(w), values(values_in), scratch, states.initial.present() ? states.initial.data() : nullptr,
         strides_of(states.initial), sums, whole, false);
    pass(keys(u), zero_keys, zero_values, values(outputs), sums, whole, nullptr, {}, false);
    denominators();
    // dS = dS_final + sum u^T g; du = g S^T; dw = v dS^T; dv = w dS.
    pass(zero_keys, keys(u), values(outputs), scratch, states.d_final.present() ? states.d_final.data() : nullptr,
         strides_of(states.d_final), d_whole, sd, false);
    pass(values(outputs), zero_values, zero_keys, keys(du), sums, transposed(whole), nullptr, {}, true);
    pass(values(values_in), zero_values, zero_keys, keys(dw), d_whole, transposed(sd), nullptr, {}, true);
    pass(keys(w), zero_keys, zero_values, values(dvalues), d_whole, sd, nullptr, {}, false);
  }

  cosine_gradients_kernel<T, F><<<slice_blocks, kBackwardThreads, 0, stream>>>(
      p, x, parts, z_slices, r_slices,
      CosineGradientOutputs<T>{c.dk.data(), c.dv.data(), strides_of(c.dk), strides_of(c.dv)}, causal, angles);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void run_cosine_backward(const BackwardCall<T>& c, const RecurrenceParams& cosine, bool causal,
                         const CosineBackwardPlan& plan, const Device& device) {
  if (plan.bf16) run_cosine_backward_as<T, __nv_bfloat16>(c, cosine, causal, plan, device);
  else run_cosine_backward_as<T, float>(c, cosine, causal, plan, device);
}

}  // namespace lcsm::cuda::detail
