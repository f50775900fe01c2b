// cosFormer's backward around the engine (chunked/cosine_backward.cuh): the per-token kernels that
// form the tokens' angles and the features (fp32; bf16 in fast mode), and the normaliser's column
// as scans over time. With u, w the features
// of q and k (2K columns), Z_t = z_0 + sum_{j <= t} w_j the key sums (non-causal: the whole
// sequence's), den_t = u_t . Z_t and e_t its gradient,
//   du_t += e_t Z_t,   dw_j += R_j,   R_j = dz_final + sum_{t >= j} e_t u_t (non-causal: all t),
//   dz_0 = R at the sequence's first token.
// Each sequence is cut into `parts` slices of time, one warp each: the slices' sums, then one thread
// per (sequence, head, column) turns them into what each slice starts from, then each warp walks
// its slice. A lane holds the column pairs (d, K + d) for d = lane + 32 i: the cos and sin halves of
// one key, so q and k are read once per token and the features recomputed in registers. Sums over
// time in double (the sums of w grow with T; the CPU's are double). Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/backward_kernels.cuh"
#include "lcsm/cuda/chunked/cosine.cuh"
#include "lcsm/cuda/dtype.cuh"

namespace lcsm::cuda::detail {

constexpr int kCosineKeysPerLane = 4;  // K <= 128

// phi'(x) from y = phi(x), as the CPU's cos_phi_grad: ReLU 1 where y > 0; 1 + ELU min(y, 1).
__device__ __forceinline__ float cos_phi_grad(bool relu, float y) {
  if (relu) return y > 0.f ? 1.f : 0.f;
  return y < 1.f ? y : 1.f;
}

// The feature problem [B, T, H, X] that the engine passes read and write, in the feature type F
// (fp32; bf16 in fast mode), rows of `key_row` (u, w, du, dw) or `value_row` elements (the others;
// both 16-byte multiples, so the engine loads them 16 bytes at a time): u = [phi(q) cos, phi(q)
// sin], w = [phi(k) cos, phi(k) sin] (2K columns), v (V columns), and their gradients; e: the
// denominators' gradients [B, T, H], fp32.
struct CosineFeatures {
  int key_row, value_row;
  void* u;
  void* w;
  void* values;   // v (read until the end)
  void* outputs;  // the numerators; then their gradients g in place
  void* du;
  void* dw;
  void* dvalues;
  void* dvalues_sin;  // causal: the sin half's dv, added to dvalues (null: none)
  float* e;
};

__device__ __forceinline__ std::int64_t feature_row(const RecurrenceParams& p, std::int64_t b, std::int64_t t, int h,
                                                    int width) {
  return ((b * p.time + t) * p.heads + h) * static_cast<std::int64_t>(width);
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

// The angle of every token of the call's rows, [B, T] (cos, sin), as the forward forms it (sincospi
// in double): computed once here rather than per token and head in each kernel below. Tokens
// outside every sequence get (0, 0).
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_angles_kernel(const __grid_constant__ RecurrenceParams p, float2* angles) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < p.batch * p.time;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const TokenPlace place = token_place(p, i / p.time, i % p.time);
    angles[i] = place.sequence < 0 ? make_float2(0.f, 0.f)
                                   : cos_angle(cos_sequence(p, place.sequence, place.length), place.index);
  }
}

// u, w and v as rows of F, one warp per token (its heads in turn); tokens outside every sequence
// are skipped (no engine pass reads or writes them). p: the call's params, its own views and strides.
template <class T, class F>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_features_kernel(const __grid_constant__ RecurrenceParams p, const CosineFeatures f,
                           const float2* __restrict__ angles) {
  const int K = p.key_dim, V = p.value_dim, lane = threadIdx.x % 32;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  for (std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32;
       r < p.batch * p.time; r += warps) {
    const std::int64_t t = r % p.time, b = r / p.time;
    if (p.cu_seqlens && token_place(p, b, t).sequence < 0) continue;
    const float2 cs = angles[r];
    for (int h = 0; h < p.heads; ++h) {
      const T* __restrict__ q = static_cast<const T*>(p.q) + b * p.sq.s0 + t * p.sq.s1 + h * p.sq.s2;
      const T* __restrict__ k = static_cast<const T*>(p.k) + b * p.sk.s0 + t * p.sk.s1 + h * p.sk.s2;
      const T* __restrict__ v = static_cast<const T*>(p.v) + b * p.sv.s0 + t * p.sv.s1 + h * p.sv.s2;
      F* __restrict__ u = static_cast<F*>(f.u) + feature_row(p, b, t, h, f.key_row);
      F* __restrict__ w = static_cast<F*>(f.w) + feature_row(p, b, t, h, f.key_row);
      F* __restrict__ values = static_cast<F*>(f.values) + feature_row(p, b, t, h, f.value_row);
      for (int d = lane; d < K; d += 32) {
        const float a = cos_phi(p.relu, to_float(q[d * p.sq.s3])), c = cos_phi(p.relu, to_float(k[d * p.sk.s3]));
        u[d] = from_float<F>(a * cs.x);
        u[K + d] = from_float<F>(a * cs.y);
        w[d] = from_float<F>(c * cs.x);
        w[K + d] = from_float<F>(c * cs.y);
      }
      for (int d = lane; d < V; d += 32) values[d] = from_float<F>(to_float(v[d * p.sv.s3]));
    }
  }
}

// The slice of warp w: sequence n, head h, part; its tokens [first, last) of batch row `batch`,
// the sequence's first token `start` and length (for the angles).
struct CosineSlice {
  std::int64_t n, batch, start, length, first, last;
  int h, part;
};
__device__ __forceinline__ bool cosine_slice(const RecurrenceParams& p, int parts, CosineSlice& s) {
  const std::int64_t w = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (w >= p.sequences * p.heads * parts) return false;
  s.part = static_cast<int>(w % parts);
  s.h = static_cast<int>((w / parts) % p.heads);
  s.n = w / parts / p.heads;
  const SequenceSpan span = sequence_span(p, s.n);
  s.batch = span.batch, s.start = span.start, s.length = span.length;
  part_range(span, s.part, parts, s.first, s.last);
  return true;
}

// Index of column c of (n, part, h) in the slices' sums [N, parts, H, 2K].
__device__ __forceinline__ std::int64_t slice_column(const RecurrenceParams& p, int parts, std::int64_t n, int part,
                                                     int h, int c) {
  return ((n * parts + part) * p.heads + h) * 2 * static_cast<std::int64_t>(p.key_dim) + c;
}

// This lane's phi(x) of one token's row (0 past K).
template <class T>
__device__ __forceinline__ void lane_phi(float (&y)[kCosineKeysPerLane], const T* row, std::int64_t stride, int K,
                                         bool relu, int lane) {
#pragma unroll
  for (int i = 0; i < kCosineKeysPerLane; ++i) {
    const int d = lane + 32 * i;
    y[i] = d < K ? cos_phi(relu, to_float(row[d * stride])) : 0.f;
  }
}

// A lane's columns (d, K + d) of a 2K-vector in double.
struct LanePairs {
  double c[kCosineKeysPerLane], s[kCosineKeysPerLane];
  __device__ void load(const double* x, int K, int lane) {
#pragma unroll
    for (int i = 0; i < kCosineKeysPerLane; ++i) {
      const int d = lane + 32 * i;
      c[i] = d < K ? x[d] : 0.0;
      s[i] = d < K ? x[K + d] : 0.0;
    }
  }
  __device__ void store(double* x, int K, int lane) const {
#pragma unroll
    for (int i = 0; i < kCosineKeysPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < K) x[d] = c[i], x[K + d] = s[i];
    }
  }
  // this += f * (y cos, y sin)
  __device__ void add(const float (&y)[kCosineKeysPerLane], float2 cs, float f) {
#pragma unroll
    for (int i = 0; i < kCosineKeysPerLane; ++i) {  // the features as the engine's (y cos, y sin in float)
      c[i] += static_cast<double>(f) * static_cast<double>(y[i] * cs.x);
      s[i] += static_cast<double>(f) * static_cast<double>(y[i] * cs.y);
    }
  }
};

template <class T>
__device__ __forceinline__ const T* token_row(const void* base, const Strides4& s, const CosineSlice& sl,
                                              std::int64_t t) {
  return static_cast<const T*>(base) + sl.batch * s.s0 + t * s.s1 + sl.h * s.s2;
}

// Value columns per lane (V <= 256). The walks take one token at a time: batching the loads of two
// tokens (four in the key sums) measured slower on an H100 at T = 64K (the registers they hold cost
// the slices their single wave of warps). What sped them up is the restrict-qualified views: the
// denominators kernel 11.8 -> 2.7 ms in fast mode, 4.3 -> 2.6 exact (its rows no longer pin the
// next token's loads behind the last token's stores), the gradients 4.2 -> 3.4.
constexpr int kCosineValuesPerLane = 8;

// The slices' sums of w: sums[n, part, h, :] (one warp per slice). angles: [B, T].
template <class T>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_key_sums_kernel(const __grid_constant__ RecurrenceParams p, int parts, double* sums,
                           const float2* __restrict__ angles) {
  CosineSlice sl;
  if (!cosine_slice(p, parts, sl)) return;
  const int K = p.key_dim, lane = threadIdx.x % 32;
  const T* __restrict__ k = token_row<T>(p.k, p.sk, sl, 0);
  const float2* __restrict__ cs = angles + sl.batch * p.time;
  LanePairs z{};
  for (std::int64_t t = sl.first; t < sl.last; ++t) {
    float c[kCosineKeysPerLane];
    lane_phi(c, k + t * p.sk.s1, p.sk.s3, K, p.relu, lane);
    z.add(c, cs[t], 1.f);
  }
  z.store(sums + slice_column(p, parts, sl.n, sl.part, sl.h, 0), K, lane);
}

// One thread per (sequence, head, column): the slices' sums become what each slice starts from,
// base (column V of a [N, H, 2K, V + 1] state, by its strides; absent: 0) plus the sums of the
// slices before it (forward), of it and after it (backward), or of all (whole: non-causal). total,
// when present: base plus every slice, at column V of a state.
struct CosineColumn {
  const float* base;  // at column V
  Strides4 sb;
  float* total;  // at column V
  Strides4 st;
};
enum class SliceCarry { forward, backward, whole };

template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_carry_kernel(const __grid_constant__ RecurrenceParams p, int parts, double* sums, CosineColumn col,
                        SliceCarry how) {
  const int K2 = 2 * p.key_dim;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.sequences * p.heads * K2) return;
  const int c = static_cast<int>(i % K2), h = static_cast<int>((i / K2) % p.heads);
  const std::int64_t n = i / K2 / p.heads;
  const double base = col.base ? col.base[n * col.sb.s0 + h * col.sb.s1 + c * col.sb.s2] : 0.0;
  double total = base;
  for (int part = 0; part < parts; ++part) total += sums[slice_column(p, parts, n, part, h, c)];
  double carry = how == SliceCarry::backward ? total : base;
  for (int part = 0; part < parts; ++part) {
    double& slot = sums[slice_column(p, parts, n, part, h, c)];
    const double sum = slot;
    slot = how == SliceCarry::whole ? total : carry;
    carry += how == SliceCarry::backward ? -sum : sum;
  }
  if (col.total) col.total[n * col.st.s0 + h * col.st.s1 + c * col.st.s2] = static_cast<float>(total);
}

// Per slice: den_t = u_t . Z_t; the numerators (f.outputs) become g = dO / max(den, eps) in place,
// e_t = -(dO . num) / max(den, eps)^2, 0 where the clamp is active (a NaN den: NaN g, e = 0, as on
// the CPU); e_sums[n, part, h, :] = sum over the slice of e_t u_t. z: what each slice starts from
// (cosine_carry_kernel). d_o: p.o with p.so. den is summed in float from the double Z (the
// forward's own den is a float sum).
template <class T, class F>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_denominators_kernel(const __grid_constant__ RecurrenceParams p, const CosineFeatures f, int parts,
                               const double* z, double* e_sums, bool causal, const float2* __restrict__ angles) {
  constexpr int kV = kCosineValuesPerLane;
  CosineSlice sl;
  if (!cosine_slice(p, parts, sl)) return;
  const int K = p.key_dim, V = p.value_dim, lane = threadIdx.x % 32;
  const T* __restrict__ q = token_row<T>(p.q, p.sq, sl, 0);
  const T* __restrict__ k = token_row<T>(p.k, p.sk, sl, 0);
  const T* __restrict__ d_o = token_row<T>(p.o, p.so, sl, 0);
  F* __restrict__ rows = static_cast<F*>(f.outputs) + feature_row(p, sl.batch, 0, sl.h, f.value_row);
  float* __restrict__ e_out = f.e + sl.batch * p.time * p.heads + sl.h;
  const std::int64_t row_step = static_cast<std::int64_t>(p.heads) * f.value_row;
  const float2* __restrict__ angle = angles + sl.batch * p.time;
  LanePairs Z, eu{};
  Z.load(z + slice_column(p, parts, sl.n, sl.part, sl.h, 0), K, lane);
  for (std::int64_t t = sl.first; t < sl.last; ++t) {
    float a[kCosineKeysPerLane], c[kCosineKeysPerLane], g[kV], num[kV];
    const float2 cs = angle[t];
    lane_phi(a, q + t * p.sq.s1, p.sq.s3, K, p.relu, lane);
    if (causal) lane_phi(c, k + t * p.sk.s1, p.sk.s3, K, p.relu, lane);
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      const int d = lane + 32 * j;
      g[j] = d < V ? to_float(d_o[t * p.so.s1 + d * p.so.s3]) : 0.f;
      num[j] = d < V ? to_float(rows[t * row_step + d]) : 0.f;
    }
    if (causal) Z.add(c, cs, 1.f);
    float part = 0.f, dot = 0.f;
#pragma unroll
    for (int i = 0; i < kCosineKeysPerLane; ++i)
      part += a[i] * cs.x * static_cast<float>(Z.c[i]) + a[i] * cs.y * static_cast<float>(Z.s[i]);
#pragma unroll
    for (int j = 0; j < kV; ++j) dot = fmaf(g[j], num[j], dot);
    for (int offset = 16; offset > 0; offset /= 2) {
      part += __shfl_xor_sync(0xffffffffu, part, offset);
      dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    }
    const float den = part, r = 1.f / (den < p.eps ? p.eps : den);
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      const int d = lane + 32 * j;
      if (d < V) rows[t * row_step + d] = from_float<F>(g[j] * r);
    }
    const float e = den > p.eps ? -dot * r * r : 0.f;
    if (lane == 0) e_out[t * p.heads] = e;
    eu.add(a, cs, e);
  }
  eu.store(e_sums + slice_column(p, parts, sl.n, sl.part, sl.h, 0), K, lane);
}

// dq = phi'(q) (.) (du_cos cos + du_sin sin) with du += e Z, dk likewise from dw + R, dv from
// dvalues (plus dvalues_sin). z, r: what each slice starts from (cosine_carry_kernel: forward or whole,
// backward or whole). p: the call's params with q, k, v and (as o) dq; dk and dv by their own views.
template <class T>
struct CosineGradientOutputs {
  T* dk;
  T* dv;
  Strides4 sdk, sdv;
};

template <class T, class F>
__global__ void __launch_bounds__(kBackwardThreads)
    cosine_gradients_kernel(const __grid_constant__ RecurrenceParams p, const CosineFeatures f, int parts,
                            const double* z, const double* r, const CosineGradientOutputs<T> out, bool causal,
                            const float2* __restrict__ angles) {
  constexpr int kL = kCosineKeysPerLane;
  CosineSlice sl;
  if (!cosine_slice(p, parts, sl)) return;
  const int K = p.key_dim, V = p.value_dim, lane = threadIdx.x % 32;
  const T* __restrict__ q = token_row<T>(p.q, p.sq, sl, 0);
  const T* __restrict__ k = token_row<T>(p.k, p.sk, sl, 0);
  T* __restrict__ dq = static_cast<T*>(p.o) + sl.batch * p.so.s0 + sl.h * p.so.s2;
  T* __restrict__ dk = out.dk + sl.batch * out.sdk.s0 + sl.h * out.sdk.s2;
  T* __restrict__ dv = out.dv + sl.batch * out.sdv.s0 + sl.h * out.sdv.s2;
  const std::int64_t first_row = feature_row(p, sl.batch, 0, sl.h, 1), token_step = p.heads;
  const F* __restrict__ du = static_cast<const F*>(f.du) + first_row * f.key_row;
  const F* __restrict__ dw = static_cast<const F*>(f.dw) + first_row * f.key_row;
  const F* __restrict__ dvalues = static_cast<const F*>(f.dvalues) + first_row * f.value_row;
  const F* __restrict__ dvalues_sin =
      f.dvalues_sin ? static_cast<const F*>(f.dvalues_sin) + first_row * f.value_row : nullptr;
  const float* __restrict__ e_in = f.e + first_row;
  const float2* __restrict__ angle = angles + sl.batch * p.time;
  LanePairs Z, R;
  Z.load(z + slice_column(p, parts, sl.n, sl.part, sl.h, 0), K, lane);
  R.load(r + slice_column(p, parts, sl.n, sl.part, sl.h, 0), K, lane);
  for (std::int64_t t = sl.first; t < sl.last; ++t) {
    float a[kL], c[kL], duc[kL], dus[kL], dwc[kL], dws[kL];
    const float2 cs = angle[t];
    const float e = e_in[t * token_step];
    lane_phi(a, q + t * p.sq.s1, p.sq.s3, K, p.relu, lane);
    lane_phi(c, k + t * p.sk.s1, p.sk.s3, K, p.relu, lane);
    const F* du_t = du + t * token_step * f.key_row;
    const F* dw_t = dw + t * token_step * f.key_row;
#pragma unroll
    for (int i = 0; i < kL; ++i) {
      const int d = lane + 32 * i;
      duc[i] = d < K ? to_float(du_t[d]) : 0.f, dus[i] = d < K ? to_float(du_t[K + d]) : 0.f;
      dwc[i] = d < K ? to_float(dw_t[d]) : 0.f, dws[i] = d < K ? to_float(dw_t[K + d]) : 0.f;
    }
    if (causal) Z.add(c, cs, 1.f);
#pragma unroll
    for (int i = 0; i < kL; ++i) {
      const int d = lane + 32 * i;
      if (d >= K) break;
      const float du_c = duc[i] + static_cast<float>(e * Z.c[i]);
      const float du_s = dus[i] + static_cast<float>(e * Z.s[i]);
      const float dw_c = dwc[i] + static_cast<float>(R.c[i]);
      const float dw_s = dws[i] + static_cast<float>(R.s[i]);
      dq[t * p.so.s1 + d * p.so.s3] = from_float<T>(cos_phi_grad(p.relu, a[i]) * fmaf(du_c, cs.x, du_s * cs.y));
      dk[t * out.sdk.s1 + d * out.sdk.s3] = from_float<T>(cos_phi_grad(p.relu, c[i]) * fmaf(dw_c, cs.x, dw_s * cs.y));
    }
    if (causal) R.add(a, cs, -e);
    const F* dv_t = dvalues + t * token_step * f.value_row;
    const F* dv_sin_t = dvalues_sin ? dvalues_sin + t * token_step * f.value_row : nullptr;
    for (int d = lane; d < V; d += 32)
      dv[t * out.sdv.s1 + d * out.sdv.s3] = from_float<T>(to_float(dv_t[d]) + (dv_sin_t ? to_float(dv_sin_t[d]) : 0.f));
  }
}

}  // namespace lcsm::cuda::detail
