// cosFormer's backward around the engine (chunked/cosine_backward.cuh): the per-token kernels that
// form the fp32 features, turn the recomputed numerator and denominator into their gradients, and
// chain the feature gradients through cos, sin and phi. One warp per (token, head). Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/backward_kernels.cuh"
#include "lcsm/cuda/chunked/cosine.cuh"
#include "lcsm/cuda/dtype.cuh"

namespace lcsm::cuda::detail {

// phi'(x) from y = phi(x), as the CPU's cos_phi_grad: ReLU 1 where y > 0; 1 + ELU min(y, 1).
__device__ __forceinline__ float cos_phi_grad(bool relu, float y) {
  if (relu) return y > 0.f ? 1.f : 0.f;
  return y < 1.f ? y : 1.f;
}

// Token t of row b in its sequence: the sequence (-1 outside every sequence: before cu[0] or from
// cu[N] on), the token's index in it and the sequence's length. Varlen rows search the offsets
// (clamped to [0, T] as every kernel reads them).
struct TokenPlace {
  std::int64_t sequence, index, length;
};
__device__ __forceinline__ TokenPlace token_place(const RecurrenceParams& p, std::int64_t b, std::int64_t t) {
  if (!p.cu_seqlens) return {b, t, p.time};
  if (t < cu_offset(p, 0) || t >= cu_offset(p, p.sequences)) return {-1, 0, 0};
  std::int64_t lo = 0, hi = p.sequences;  // the last n with cu[n] <= t
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (cu_offset(p, mid) <= t) lo = mid;
    else hi = mid;
  }
  const std::int64_t start = cu_offset(p, lo);
  return {lo, t - start, cu_offset(p, lo + 1) - start};
}

// The fp32 feature problem [B, T, H, X], rows of `key_row` (u, w, du, dw) or `value_row` floats
// (the others; both multiples of 4, so the engine loads them 16 bytes at a time): u = [phi(q) cos,
// phi(q) sin], w = [phi(k) cos, phi(k) sin] (2K columns), [v, 1] (V + 1), and their gradients.
struct CosineFeatures {
  int key_row, value_row;
  float* u;
  float* w;
  float* values;   // [v, 1] (read until the end)
  float* outputs;  // [num, den]; then their gradients [g, e] in place
  float* du;
  float* dw;
  float* dvalues;
};

__device__ __forceinline__ std::int64_t feature_row(const RecurrenceParams& p, std::int64_t b, std::int64_t t, int h,
                                                    int width) {
  return ((b * p.time + t) * p.heads + h) * static_cast<std::int64_t>(width);
}

// Rows of the call (b, t, h), one warp each, with the token's place and angle; tokens outside
// every sequence are skipped (no engine pass reads or writes them).
template <class F>
__device__ __forceinline__ void for_each_token_row(const RecurrenceParams& p, F&& f) {
  const int lane = threadIdx.x % 32;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  const std::int64_t rows = p.batch * p.time * p.heads;
  for (std::int64_t w = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32; w < rows;
       w += warps) {
    const int h = static_cast<int>(w % p.heads);
    const std::int64_t t = (w / p.heads) % p.time, b = w / p.heads / p.time;
    const TokenPlace place = token_place(p, b, t);
    if (place.sequence < 0) continue;
    const float2 cs = cos_angle(cos_sequence(p, place.sequence, place.length), place.index);
    f(b, t, h, cs, lane);
  }
}

// u, w and [v, 1] from q, k, v (p: the call's params, its own views and strides).
template <class T>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_features_kernel(const __grid_constant__ RecurrenceParams p, const CosineFeatures f) {
  const int K = p.key_dim, V = p.value_dim;
  for_each_token_row(p, [&](std::int64_t b, std::int64_t t, int h, float2 cs, int lane) {
    const T* q = static_cast<const T*>(p.q) + b * p.sq.s0 + t * p.sq.s1 + h * p.sq.s2;
    const T* k = static_cast<const T*>(p.k) + b * p.sk.s0 + t * p.sk.s1 + h * p.sk.s2;
    const T* v = static_cast<const T*>(p.v) + b * p.sv.s0 + t * p.sv.s1 + h * p.sv.s2;
    float* u = f.u + feature_row(p, b, t, h, f.key_row);
    float* w = f.w + feature_row(p, b, t, h, f.key_row);
    float* values = f.values + feature_row(p, b, t, h, f.value_row);
    for (int d = lane; d < K; d += 32) {
      const float a = cos_phi(p.relu, to_float(q[d * p.sq.s3])), c = cos_phi(p.relu, to_float(k[d * p.sk.s3]));
      u[d] = a * cs.x;
      u[K + d] = a * cs.y;
      w[d] = c * cs.x;
      w[K + d] = c * cs.y;
    }
    for (int d = lane; d <= V; d += 32) values[d] = d < V ? to_float(v[d * p.sv.s3]) : 1.f;
  });
}

// [num, den] -> [g, e] in place: g = dO / max(den, eps), e = -(dO . num) / max(den, eps)^2, 0 where
// the clamp is active (a NaN den gives NaN g and e = 0, as on the CPU). d_o: p.o with p.so.
template <class T>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_output_grads_kernel(const __grid_constant__ RecurrenceParams p, const CosineFeatures f) {
  const int V = p.value_dim;
  for_each_token_row(p, [&](std::int64_t b, std::int64_t t, int h, float2, int lane) {
    const T* d_o = static_cast<const T*>(p.o) + b * p.so.s0 + t * p.so.s1 + h * p.so.s2;
    float* row = f.outputs + feature_row(p, b, t, h, f.value_row);
    const float den = row[V], r = 1.f / (den < p.eps ? p.eps : den);
    float dot = 0.f;
    for (int d = lane; d < V; d += 32) {
      const float g = to_float(d_o[d * p.so.s3]);
      dot = fmaf(g, row[d], dot);
      row[d] = g * r;
    }
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    if (lane == 0) row[V] = den > p.eps ? -dot * r * r : 0.f;
  });
}

// dq = phi'(q) (.) (du_cos cos + du_sin sin), dk likewise from dw, dv the first V columns of
// dvalues. p: the call's params with q, k, v and (as o) dq; dk and dv by their own views.
template <class T>
struct CosineGradientOutputs {
  T* dk;
  T* dv;
  Strides4 sdk, sdv;
};

template <class T>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_gradients_kernel(const __grid_constant__ RecurrenceParams p, const CosineFeatures f,
                            const CosineGradientOutputs<T> out) {
  const int K = p.key_dim, V = p.value_dim;
  for_each_token_row(p, [&](std::int64_t b, std::int64_t t, int h, float2 cs, int lane) {
    const T* q = static_cast<const T*>(p.q) + b * p.sq.s0 + t * p.sq.s1 + h * p.sq.s2;
    const T* k = static_cast<const T*>(p.k) + b * p.sk.s0 + t * p.sk.s1 + h * p.sk.s2;
    T* dq = static_cast<T*>(p.o) + b * p.so.s0 + t * p.so.s1 + h * p.so.s2;
    T* dk = out.dk + b * out.sdk.s0 + t * out.sdk.s1 + h * out.sdk.s2;
    T* dv = out.dv + b * out.sdv.s0 + t * out.sdv.s1 + h * out.sdv.s2;
    const float* du = f.du + feature_row(p, b, t, h, f.key_row);
    const float* dw = f.dw + feature_row(p, b, t, h, f.key_row);
    const float* dvalues = f.dvalues + feature_row(p, b, t, h, f.value_row);
    for (int d = lane; d < K; d += 32) {
      const float a = cos_phi(p.relu, to_float(q[d * p.sq.s3])), c = cos_phi(p.relu, to_float(k[d * p.sk.s3]));
      dq[d * p.so.s3] = from_float<T>(cos_phi_grad(p.relu, a) * fmaf(du[d], cs.x, du[K + d] * cs.y));
      dk[d * out.sdk.s3] = from_float<T>(cos_phi_grad(p.relu, c) * fmaf(dw[d], cs.x, dw[K + d] * cs.y));
    }
    for (int d = lane; d < V; d += 32) dv[d * out.sdv.s3] = from_float<T>(dvalues[d]);
  });
}

}  // namespace lcsm::cuda::detail
