// The segment scan: segment contributions -> segment start states, and (varlen) the first segment
// of every sequence. Both kernels are small next to the chunk kernels; device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/work.cuh"

namespace lcsm::cuda::detail {

constexpr int kScanThreads = 256;

// The state's rows and columns: [K, V], cosFormer's [2K, V + 1] (its key sums z in column V).
template <DecayKind kDecay>
__host__ __device__ inline int state_rows(const RecurrenceParams& p) {
  return kDecay == DecayKind::cosine ? 2 * p.key_dim : p.key_dim;
}
template <DecayKind kDecay>
__host__ __device__ inline int state_cols(const RecurrenceParams& p) {
  return kDecay == DecayKind::cosine ? p.value_dim + 1 : p.value_dim;
}

// The state element (row r, column c) of one (sequence n, head h) a scan thread owns, and the
// sequence's segments: slots first .. first + count - 1, `length` tokens. Grid: x = element blocks
// x heads x sequences. Varlen without segment offsets (a slice not cut): one segment each.
struct ScanElement {
  std::int64_t e, kv, n, first, count, length;
  int h, r, c;
  bool valid;
};
template <DecayKind kDecay>
__device__ inline ScanElement scan_element(const RecurrenceParams& p) {
  ScanElement x{};
  const int cols = state_cols<kDecay>(p);
  x.kv = static_cast<std::int64_t>(state_rows<kDecay>(p)) * cols;
  const std::int64_t element_blocks = (x.kv + kScanThreads - 1) / kScanThreads;
  const std::int64_t block = blockIdx.x;
  x.e = (block % element_blocks) * kScanThreads + threadIdx.x;
  x.h = static_cast<int>((block / element_blocks) % p.heads);
  x.n = block / (element_blocks * p.heads);
  x.valid = x.e < x.kv;
  x.r = static_cast<int>(x.e / cols), x.c = static_cast<int>(x.e % cols);
  if (!p.cu_seqlens) {
    x.first = x.n * p.segments_per_seq;
    x.count = p.segments_per_seq;
    x.length = p.time;
  } else {
    x.first = p.segment_offsets ? p.segment_offsets[x.n] : x.n;
    x.count = p.segment_offsets ? p.segment_offsets[x.n + 1] - x.first : 1;
    x.length = cu_offset(p, x.n + 1) - cu_offset(p, x.n);
    if (x.length < 0) x.length = 0;
  }
  return x;
}

// The initial state's element, or 0.
__device__ inline float initial_element(const RecurrenceParams& p, const ScanElement& x) {
  return p.initial_state ? p.initial_state[x.n * p.s_initial.s0 + x.h * p.s_initial.s1 + x.r * p.s_initial.s2 +
                                           x.c * p.s_initial.s3]
                         : 0.f;
}

// One thread per state element (row r, column c) of one (sequence, head). Slot first + s holds the
// contribution of segment s - 1 on entry and the state before segment s on exit:
//   slot[first] = initial;  slot[first + s + 1] = D(s) slot[first + s] + delta(s),
// with D(s) the decay over segment s: lambda^len (head), 2^(segment log2-decay) (gates; per key row
// for the vector gate, per value column for the value gate; 1 for cosFormer). Only this kernel
// reads the initial state of a cut sequence, so final_state may alias it. Grid: x = element blocks
// x heads x sequences.
template <DecayKind kDecay>
__global__ void __launch_bounds__(kScanThreads) segment_scan_kernel(const __grid_constant__ RecurrenceParams p) {
  const ScanElement x = scan_element<kDecay>(p);
  if (!x.valid) return;
  const std::int64_t e = x.e, kv = x.kv, first = x.first, count = x.count, length = x.length;
  const int h = x.h, r = x.r, c = x.c;
  float running = initial_element(p, x);
  p.segment_states[(first * p.heads + h) * kv + e] = running;
  for (std::int64_t s = 0; s + 1 < count; ++s) {
    float decay;
    if constexpr (kDecay == DecayKind::cosine) {
      decay = 1.f;
    } else if constexpr (kDecay == DecayKind::head) {
      const std::int64_t len = (s + 1) * p.segment_len <= length ? p.segment_len : length - s * p.segment_len;
      decay = static_cast<float>(exp(p.log_decay[h] * len));
    } else if constexpr (kDecay == DecayKind::token) {
      decay = exp2f(p.segment_log_decay[(first + s) * p.heads + h]);
    } else if constexpr (kDecay == DecayKind::key) {
      decay = exp2f(p.segment_log_decay[((first + s) * p.heads + h) * p.key_dim + r]);
    } else {
      decay = exp2f(p.segment_log_decay[((first + s) * p.heads + h) * p.value_dim + c]);
    }
    float* slot = p.segment_states + ((first + s + 1) * p.heads + h) * kv + e;
    running = decay * running + *slot;
    *slot = running;
  }
}

// Sequence parallelism (sequence_parallel.cuh), after a ForwardPhase::deltas launch: every
// segment's contribution from zero (the last one in p.last_delta) folded into the state after the
// whole slice from p.initial_state (zero when absent), written over p.last_delta [N, H, K, V], and
// the slice's total log2-decay per (sequence, head, gate column) into total_log2 [N, H, width]
// (width 1 for a decay per head or token). Sequences not cut: one segment each. One thread per
// state element, as segment_scan_kernel.
template <DecayKind kDecay>
__global__ void __launch_bounds__(kScanThreads)
    slice_fold_kernel(const __grid_constant__ RecurrenceParams p, float* total_log2) {
  const ScanElement x = scan_element<kDecay>(p);
  if (!x.valid) return;
  const std::int64_t e = x.e, kv = x.kv, n = x.n, first = x.first, count = x.count, length = x.length;
  const int h = x.h, r = x.r, c = x.c;
  float running = initial_element(p, x);
  double total = 0;  // log2
  float* last = p.last_delta + (n * p.heads + h) * kv + e;
  for (std::int64_t s = 0; s < count; ++s) {
    double log2_decay;
    if constexpr (kDecay == DecayKind::cosine) {
      log2_decay = 0;
    } else if constexpr (kDecay == DecayKind::head) {
      const std::int64_t len = (s + 1) * p.segment_len <= length ? p.segment_len : length - s * p.segment_len;
      log2_decay = p.log_decay[h] * kLog2e * static_cast<double>(len > 0 ? len : 0);
    } else if constexpr (kDecay == DecayKind::token) {
      log2_decay = p.segment_log_decay[(first + s) * p.heads + h];
    } else if constexpr (kDecay == DecayKind::key) {
      log2_decay = p.segment_log_decay[((first + s) * p.heads + h) * p.key_dim + r];
    } else {
      log2_decay = p.segment_log_decay[((first + s) * p.heads + h) * p.value_dim + c];
    }
    const float delta = s + 1 < count ? p.segment_states[((first + s + 1) * p.heads + h) * kv + e] : *last;
    running = exp2f(static_cast<float>(log2_decay)) * running + delta;
    total += log2_decay;
  }
  *last = running;
  const bool writer = kDecay == DecayKind::key ? c == 0 : kDecay == DecayKind::value ? r == 0 : e == 0;
  if (writer) {
    const int w = kDecay == DecayKind::key ? r : kDecay == DecayKind::value ? c : 0;
    const int width = kDecay == DecayKind::key ? p.key_dim : kDecay == DecayKind::value ? p.value_dim : 1;
    total_log2[(n * p.heads + h) * width + w] = static_cast<float>(total);
  }
}

// Varlen: segment_offsets[n] = sum over m < n of max(1, ceil(len_m / segment_len)), one block.
template <int kUnused = 0>
__global__ void segment_offsets_kernel(const __grid_constant__ RecurrenceParams p, std::int64_t* offsets) {
  __shared__ std::int64_t carry;
  __shared__ std::int64_t partial[1024];
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (std::int64_t base = 0; base < p.sequences; base += blockDim.x) {
    const std::int64_t n = base + threadIdx.x;
    std::int64_t count = 0;
    if (n < p.sequences) {
      const std::int64_t len = cu_offset(p, n + 1) - cu_offset(p, n);
      count = len <= 0 ? 1 : (len + p.segment_len - 1) / p.segment_len;
    }
    partial[threadIdx.x] = count;
    __syncthreads();
    for (int d = 1; d < static_cast<int>(blockDim.x); d *= 2) {  // Hillis-Steele inclusive scan
      const std::int64_t add = threadIdx.x >= static_cast<unsigned>(d) ? partial[threadIdx.x - d] : 0;
      __syncthreads();
      partial[threadIdx.x] += add;
      __syncthreads();
    }
    if (n < p.sequences) offsets[n] = carry + partial[threadIdx.x] - count;
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) carry += partial[threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.x == 0) offsets[p.sequences] = carry;
}

}  // namespace lcsm::cuda::detail
