// The backward's small kernels around its three engine passes (chunked/backward.cuh): the scaled
// copy of the final-state gradient, the reversed cu_seqlens, the initial-state gradient's last
// decay, and the decay gradient (per-token terms, then sums over slices of time). Device code.
#pragma once

#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/dtype.cuh"

namespace lcsm::cuda::detail {

constexpr int kBackwardThreads = 256;
constexpr int kSuffixItems = 16;  // tokens per thread and round of the suffix sums

// The non-template kernels below are templates with a defaulted parameter (as segment_offsets_kernel):
// a header's plain __global__ function would be defined once per translation unit.

// A sequence of the forward-direction row: its batch row, first token and length.
struct SequenceSpan {
  std::int64_t batch, start, length;
};
__device__ __forceinline__ SequenceSpan sequence_span(const RecurrenceParams& p, std::int64_t n) {
  if (!p.cu_seqlens) return {n, 0, p.time};
  const std::int64_t start = cu_offset(p, n), end = cu_offset(p, n + 1);
  return {0, start, end > start ? end - start : 0};
}

// The slice [first, last) of sequence span `s` that part p of `parts` covers.
__device__ __forceinline__ void part_range(const SequenceSpan& s, int p, int parts, std::int64_t& first,
                                           std::int64_t& last) {
  const std::int64_t per = (s.length + parts - 1) / parts, end = s.start + s.length;
  first = s.start + p * per < end ? s.start + p * per : end;
  last = first + per < end ? first + per : end;
}

// out [N, H, K, V] (contiguous) = factor * in (by its strides).
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    scaled_state_copy_kernel(const float* in, Strides4 s, float* out, std::int64_t N, int H, int K, int V,
                             float factor) {
  const std::int64_t total = N * H * static_cast<std::int64_t>(K) * V;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = i % V, r = (i / V) % K, h = (i / V / K) % H, n = i / V / K / H;
    out[i] = factor * in[n * s.s0 + h * s.s1 + r * s.s2 + c * s.s3];
  }
}

// The reversed row's sequences, last first: out[m] = T - cu[N - m] (cu clamped to [0, T] as the
// kernels read it), m = 0 .. N.
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    reversed_offsets_kernel(const __grid_constant__ RecurrenceParams p, std::int64_t* out) {
  for (std::int64_t m = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; m <= p.sequences;
       m += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[m] = p.time - cu_offset(p, p.sequences - m);
}

// d_initial[n, h] *= factor * e^{g_0}: the dv pass ends at dS_0 / factor, and the gradient before
// token 0 is one decay further (g_0: the gate of the sequence's first token, per key row when
// per_key, or the head's log-decay; an empty sequence has none). p: the forward-direction params
// (gate or head decays, cu_seqlens). One block per (sequence, head).
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    initial_gradient_kernel(const __grid_constant__ RecurrenceParams p, float* d_initial, Strides4 s, int K, int V,
                            float factor, bool per_key) {
  const std::int64_t n = blockIdx.x / p.heads;
  const int h = static_cast<int>(blockIdx.x % p.heads);
  const SequenceSpan span = sequence_span(p, n);
  const float* g0 = p.log_gate ? p.log_gate + span.batch * p.sg.s0 + span.start * p.sg.s1 + h * p.sg.s2 : nullptr;
  float* head = d_initial + n * s.s0 + h * s.s1;
  for (int i = threadIdx.x; i < K * V; i += blockDim.x) {
    const int r = i / V;
    float f = factor;
    if (span.length > 0) {
      const double g = g0 ? g0[per_key ? r * p.sg.s3 : 0] : p.log_decay[h];
      f = static_cast<float>(static_cast<double>(factor) * exp(g));
    }
    head[r * s.s2 + (i % V) * s.s3] *= f;
  }
}

// The per-token decay-gradient terms and, for 16-bit inputs, the rounding of the fp32 dq, dk.
template <class T>
struct GateTermArgs {
  const T* q;
  const T* k;
  Strides4 sq, sk;
  const float* dq;  // fp32: the workspace copies (16-bit inputs) or the outputs themselves (float)
  const float* dk;
  Strides4 sdq, sdk;
  T* dq_out;  // 16-bit inputs: the outputs the fp32 values are rounded into; null otherwise
  T* dk_out;
  Strides4 sdq_out, sdk_out;
  float* terms;  // dG [B, T, H]
  Strides4 st;
};

// dG_t = q_t . dq_t - k_t . dk_t per (token, head), one warp each, fp32 products summed in fp32 (K
// terms: the sum's error is far below the products' own). p: forward-direction params (shapes,
// cu_seqlens).
template <class T>
__global__ void __launch_bounds__(kBackwardThreads)
    gate_terms_kernel(const __grid_constant__ RecurrenceParams p, const GateTermArgs<T> a) {
  const int lane = threadIdx.x % 32, K = p.key_dim, H = p.heads;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  // Tokens outside every sequence (before cu[0] or from cu[N] on) are left alone: no pass wrote them.
  const std::int64_t first = p.cu_seqlens ? cu_offset(p, 0) : 0;
  const std::int64_t used = p.cu_seqlens ? cu_offset(p, p.sequences) : p.time;
  const std::int64_t rows = p.batch * p.time * H;
  for (std::int64_t w = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32; w < rows;
       w += warps) {
    const int h = static_cast<int>(w % H);
    const std::int64_t t = (w / H) % p.time, b = w / H / p.time;
    if (t < first || t >= used) continue;
    const T* q = a.q + b * a.sq.s0 + t * a.sq.s1 + h * a.sq.s2;
    const T* k = a.k + b * a.sk.s0 + t * a.sk.s1 + h * a.sk.s2;
    const float* dq = a.dq + b * a.sdq.s0 + t * a.sdq.s1 + h * a.sdq.s2;
    const float* dk = a.dk + b * a.sdk.s0 + t * a.sdk.s1 + h * a.sdk.s2;
    float sum = 0.f;
    for (int d = lane; d < K; d += 32) {
      const float gq = dq[d * a.sdq.s3], gk = dk[d * a.sdk.s3];
      sum = fmaf(to_float(q[d * a.sq.s3]), gq, sum);
      sum = fmaf(-to_float(k[d * a.sk.s3]), gk, sum);
      if (a.dq_out) {
        a.dq_out[b * a.sdq_out.s0 + t * a.sdq_out.s1 + h * a.sdq_out.s2 + d * a.sdq_out.s3] = from_float<T>(gq);
        a.dk_out[b * a.sdk_out.s0 + t * a.sdk_out.s1 + h * a.sdk_out.s2 + d * a.sdk_out.s3] = from_float<T>(gk);
      }
    }
#pragma unroll
    for (int d = 16; d > 0; d /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, d);
    if (lane == 0) a.terms[b * a.st.s0 + t * a.st.s1 + h * a.st.s2] = sum;
  }
}

// dG_t = q_t . dq_t - k_t . dk_t from the dq and dk passes' row dots (row_dots.cuh: [B, T, H, parts]
// each, contiguous), one thread per (token, head), the parts added in order.
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    row_dot_terms_kernel(const __grid_constant__ RecurrenceParams p, const float* dq_dots, const float* dk_dots,
                         int parts, float* terms, Strides4 st) {
  const std::int64_t first = p.cu_seqlens ? cu_offset(p, 0) : 0;
  const std::int64_t used = p.cu_seqlens ? cu_offset(p, p.sequences) : p.time;
  const std::int64_t rows = p.batch * p.time * p.heads;
  for (std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int h = static_cast<int>(r % p.heads);
    const std::int64_t t = (r / p.heads) % p.time, b = r / p.heads / p.time;
    if (t < first || t >= used) continue;
    float q_dot = 0.f, k_dot = 0.f;
    for (int i = 0; i < parts; ++i) q_dot += dq_dots[r * parts + i], k_dot += dk_dots[r * parts + i];
    terms[b * st.s0 + t * st.s1 + h * st.s2] = q_dot - k_dot;
  }
}

// The decay gradient of the scalar gate and of lightning from the terms dG (per token and head):
//   scalar gate: dg_t = <dS_final, S_T> + sum over i >= t of dG_i, over the terms (d_log_gate);
//   lightning:   d_log_decay[h] = sum over sequences and t of dg_t
//                = sum over sequences of length <dS_final, S_T> + sum over i of (i - start + 1) dG_i.
// Each sequence is cut into `parts` slices of time (time_slices), so that N x H x parts blocks share
// the work (one block per (sequence, head) walked T = 64K in 16 dependent rounds: 0.127 ms on an
// H100 with H = 16). part_sums [N, H, parts + 1] (double): each slice's sum of dG (lightning:
// weighted by position), and in the last slot the final-state term (lightning: times the length).
// Every sum is in a fixed order: the result does not depend on scheduling.

// A block of these launches: blockIdx.x = (n H + h) parts + part, and its slice [first, last).
struct GradientSlice {
  std::int64_t nh, n;
  int h, part;
  SequenceSpan span;
  std::int64_t first, last;
};
__device__ __forceinline__ GradientSlice gradient_slice(const RecurrenceParams& p, int parts) {
  GradientSlice b;
  b.part = static_cast<int>(blockIdx.x % parts);
  b.nh = blockIdx.x / parts;
  b.n = b.nh / p.heads;
  b.h = static_cast<int>(b.nh % p.heads);
  b.span = sequence_span(p, b.n);
  part_range(b.span, b.part, parts, b.first, b.last);
  return b;
}

template <bool kWeighted>
__global__ void __launch_bounds__(kBackwardThreads)
    gate_part_sums_kernel(const __grid_constant__ RecurrenceParams p, const float* terms, Strides4 st,
                          const float* d_final, Strides4 sdf, const float* final_state, int K, int V, int parts,
                          double* part_sums) {
  using Reduce = cub::BlockReduce<double, kBackwardThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const GradientSlice b = gradient_slice(p, parts);
  const float* row = terms + b.span.batch * st.s0 + b.h * st.s2;
  double sum = 0;
  for (std::int64_t t = b.first + threadIdx.x; t < b.last; t += kBackwardThreads) {
    const double x = row[t * st.s1];
    sum += kWeighted ? static_cast<double>(t - b.span.start + 1) * x : x;
  }
  double* out = part_sums + b.nh * (parts + 1);
  const double total = Reduce(storage).Sum(sum);
  if (threadIdx.x == 0) out[b.part] = total;
  if (b.part != 0) return;
  double own = 0;  // <dS_final, S_T>: S_T [N, H, K, V] contiguous
  if (d_final) {
    const float* s = final_state + b.nh * static_cast<std::int64_t>(K) * V;
    const float* ds = d_final + b.n * sdf.s0 + b.h * sdf.s1;
    for (int i = threadIdx.x; i < K * V; i += blockDim.x)
      own += static_cast<double>(ds[(i / V) * sdf.s2 + (i % V) * sdf.s3]) * s[i];
  }
  __syncthreads();  // the reduction's storage is used again
  const double final_term = Reduce(storage).Sum(own);
  if (threadIdx.x == 0) out[parts] = kWeighted ? static_cast<double>(b.span.length) * final_term : final_term;
}

// The scalar gate: each slice backwards from its carry (the final-state term, then the later
// slices' sums, last first), kSuffixItems consecutive tokens (counted from the slice's end) per
// thread and round: dg_t = carry + the slice's terms from t, over the terms.
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    gate_suffix_kernel(const __grid_constant__ RecurrenceParams p, float* terms, Strides4 st, int parts,
                       const double* part_sums) {
  using Scan = cub::BlockScan<double, kBackwardThreads>;
  __shared__ typename Scan::TempStorage storage;
  const GradientSlice b = gradient_slice(p, parts);
  const double* sums = part_sums + b.nh * (parts + 1);
  double carry = sums[parts];
  for (int later = parts - 1; later > b.part; --later) carry += sums[later];
  float* row = terms + b.span.batch * st.s0 + b.h * st.s2;
  const std::int64_t first = b.first, last = b.last, length = last - first;
  for (std::int64_t base = 0; base < length; base += kBackwardThreads * kSuffixItems) {
    const std::int64_t i0 = base + static_cast<std::int64_t>(threadIdx.x) * kSuffixItems;  // from the end
    double x[kSuffixItems];
#pragma unroll
    for (int e = 0; e < kSuffixItems; ++e)
      x[e] = i0 + e < length ? static_cast<double>(row[(last - 1 - i0 - e) * st.s1]) : 0.0;
    double block_sum;
    Scan(storage).InclusiveSum(x, x, block_sum);
    __syncthreads();  // the scan's storage is reused next round
#pragma unroll
    for (int e = 0; e < kSuffixItems; ++e)
      if (i0 + e < length) row[(last - 1 - i0 - e) * st.s1] = static_cast<float>(x[e] + carry);
    carry += block_sum;
  }
}

// The vector gate's decay gradient, per key c of a (sequence, head):
//   dg_t[c] = <dS_final[c, :], S_T[c, :]> + sum over i >= t of (q_ic dq_ic - k_ic dk_ic),
// into d_gate [B, T, H, K] (fp32), rounding the fp32 dq, dk into the outputs for 16-bit inputs.
// Each sequence is cut into `parts` equal slices of time; a block takes one slice of one sequence
// and kKeyGateColumns consecutive (head, key) columns, a thread one column, so that every load and
// store is a run of a token's contiguous [H, K] row. Three launches:
//   key_gate_terms_kernel   the terms into d_gate (and the rounding), each slice's sums (double);
//   key_gate_carry_kernel   per (sequence, column): the final-state term plus the later slices' sums;
//   key_gate_suffix_kernel  each slice backwards from its carry: d_gate[t] = carry + the terms from t.
// Each thread issues kGradientBatch tokens' loads before using any. (One block per (sequence,
// head, 32 keys) walking 32 slices with 64-byte accesses moved twice its bytes: 4.6 ms at T = 64K,
// H = 16, K = 128 on an H100.)
constexpr int kKeyGateColumns = 256;
constexpr int kGradientBatch = 16;

// Grid: x = (sequence, part) pairs, y = column blocks. part_sums [N, parts, H * K].
template <class T>
__global__ void __launch_bounds__(kKeyGateColumns)
    key_gate_terms_kernel(const __grid_constant__ RecurrenceParams p, const GateTermArgs<T> a, float* d_gate,
                          Strides4 sdg, int parts, double* part_sums) {
  constexpr int kB = kGradientBatch;
  const int K = p.key_dim, HK = p.heads * p.key_dim;
  const int col = blockIdx.y * kKeyGateColumns + threadIdx.x, part = static_cast<int>(blockIdx.x % parts);
  const std::int64_t n = blockIdx.x / parts;
  if (col >= HK) return;
  const int h = col / K, key = col % K;
  const SequenceSpan span = sequence_span(p, n);
  std::int64_t first, last;
  part_range(span, part, parts, first, last);
  const std::int64_t b = span.batch;
  const T* __restrict__ q = a.q + b * a.sq.s0 + h * a.sq.s2 + key * a.sq.s3;
  const T* __restrict__ k = a.k + b * a.sk.s0 + h * a.sk.s2 + key * a.sk.s3;
  const float* __restrict__ dq = a.dq + b * a.sdq.s0 + h * a.sdq.s2 + key * a.sdq.s3;
  const float* __restrict__ dk = a.dk + b * a.sdk.s0 + h * a.sdk.s2 + key * a.sdk.s3;
  float* __restrict__ dg = d_gate + b * sdg.s0 + h * sdg.s2 + key * sdg.s3;
  double sum = 0;
  for (std::int64_t t0 = first; t0 < last; t0 += kB) {
    float gq[kB], gk[kB], xq[kB], xk[kB];
#pragma unroll
    for (int e = 0; e < kB; ++e) {
      const std::int64_t t = t0 + e < last ? t0 + e : last - 1;  // in range: repeats are not used
      gq[e] = dq[t * a.sdq.s1], gk[e] = dk[t * a.sdk.s1];
      xq[e] = to_float(q[t * a.sq.s1]), xk[e] = to_float(k[t * a.sk.s1]);
    }
#pragma unroll
    for (int e = 0; e < kB; ++e) {
      const std::int64_t t = t0 + e;
      if (t >= last) break;
      const float term = fmaf(xq[e], gq[e], -xk[e] * gk[e]);
      dg[t * sdg.s1] = term;
      sum += term;
      if (a.dq_out) {
        a.dq_out[b * a.sdq_out.s0 + t * a.sdq_out.s1 + h * a.sdq_out.s2 + key * a.sdq_out.s3] = from_float<T>(gq[e]);
        a.dk_out[b * a.sdk_out.s0 + t * a.sdk_out.s1 + h * a.sdk_out.s2 + key * a.sdk_out.s3] = from_float<T>(gk[e]);
      }
    }
  }
  part_sums[(n * parts + part) * HK + col] = sum;
}

// One thread per (sequence, column): part_sums[n, p, col] becomes the carry into part p, the final
// term <dS_final[key, :], S_T[key, :]> (S_T [N, H, K, V] contiguous; absent d_final: 0) plus the
// sums of the parts after p.
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    key_gate_carry_kernel(const __grid_constant__ RecurrenceParams p, int parts, double* part_sums,
                          const float* d_final, Strides4 sdf, const float* final_state) {
  const int K = p.key_dim, V = p.value_dim, HK = p.heads * p.key_dim;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.sequences * HK) return;
  const std::int64_t n = i / HK;
  const int col = static_cast<int>(i % HK), h = col / K, key = col % K;
  double carry = 0;
  if (d_final) {
    const float* s = final_state + ((n * p.heads + h) * static_cast<std::int64_t>(K) + key) * V;
    const float* ds = d_final + n * sdf.s0 + h * sdf.s1 + key * sdf.s2;
    for (int v = 0; v < V; ++v) carry += static_cast<double>(ds[v * sdf.s3]) * s[v];
  }
  for (int part = parts - 1; part >= 0; --part) {
    double& slot = part_sums[(n * parts + part) * HK + col];
    const double sum = slot;
    slot = carry;
    carry += sum;
  }
}

// Grid as key_gate_terms_kernel: each slice backwards from its carry.
template <int kUnused = 0>
__global__ void __launch_bounds__(kKeyGateColumns)
    key_gate_suffix_kernel(const __grid_constant__ RecurrenceParams p, float* d_gate, Strides4 sdg, int parts,
                           const double* carries) {
  constexpr int kB = kGradientBatch;
  const int K = p.key_dim, HK = p.heads * p.key_dim;
  const int col = blockIdx.y * kKeyGateColumns + threadIdx.x, part = static_cast<int>(blockIdx.x % parts);
  const std::int64_t n = blockIdx.x / parts;
  if (col >= HK) return;
  const int h = col / K, key = col % K;
  const SequenceSpan span = sequence_span(p, n);
  std::int64_t first, last;
  part_range(span, part, parts, first, last);
  float* __restrict__ dg = d_gate + span.batch * sdg.s0 + h * sdg.s2 + key * sdg.s3;
  double carry = carries[(n * parts + part) * HK + col];
  for (std::int64_t t1 = last; t1 > first; t1 -= kB) {  // tokens t1 - 1 down to t1 - kB
    float x[kB];
#pragma unroll
    for (int e = 0; e < kB; ++e) {
      const std::int64_t t = t1 - 1 - e >= first ? t1 - 1 - e : first;
      x[e] = dg[t * sdg.s1];
    }
#pragma unroll
    for (int e = 0; e < kB; ++e) {
      const std::int64_t t = t1 - 1 - e;
      if (t < first) break;
      carry += x[e];
      dg[t * sdg.s1] = static_cast<float>(carry);
    }
  }
}

// d_log_decay[h] = sum over sequences n and slots s of totals[(n H + h) slots + s], in a fixed order.
template <int kUnused = 0>
__global__ void __launch_bounds__(kBackwardThreads)
    head_totals_kernel(const double* totals, std::int64_t N, int H, int slots, float* out, std::int64_t stride) {
  const int h = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (h >= H) return;
  double sum = 0;
  for (std::int64_t n = 0; n < N; ++n)
    for (int s = 0; s < slots; ++s) sum += totals[(n * H + h) * slots + s];
  out[h * stride] = static_cast<float>(sum);
}

}  // namespace lcsm::cuda::detail
