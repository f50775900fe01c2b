// The Toeplitz convolution's direct sums on CUDA, fp32 accumulation: the whole of a short sequence's
// work (the direct path), the columns the FFT cannot take (a non-finite value: each output then sums
// exactly the products the reference sums, so NaN and Inf reach exactly the outputs they should),
// and decode over a caller-kept history. Device code.
//   apply:  out[i] = sum_j a[r] in[j],  r = i - j (forward) or j - i (input gradient), r >= 0 when
//           causal, i, j < length;
//   coefficient gradient: da[r] = sum over sequences, t of dy[t] x[t - r].
#pragma once

#include <cstdint>

#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/toeplitz/columns.cuh"
#include "lcsm/cuda/toeplitz/params.cuh"

namespace lcsm::cuda::detail {

// One block: 64 outputs x 32 channels (32 x 8 threads, 8 outputs each), the inputs in tiles of 64
// tokens, the coefficients of a tile pair in a window of 127 r per channel (both in shared memory,
// padded against bank conflicts).
constexpr int kDirectOutputs = 64, kDirectInputs = 64, kDirectWindow = kDirectOutputs + kDirectInputs - 1;

// A column takes the direct sums in a fix-up pass when it or its channel is flagged.
__device__ __forceinline__ bool column_flagged(const int* column_flags, const int* channel_flags, std::int64_t column,
                                               std::int64_t c) {
  return (column_flags && column_flags[column]) || (channel_flags && channel_flags[c]);
}

// kTranspose: the input gradient (r = j - i). kFixup: only flagged columns (column_flags per
// (sequence, channel), channel_flags per channel), the rest of `out` is left as the FFT wrote it.
// Grid: (output tiles in steps of gridDim.x, ceil(C / 32), sequences in steps of gridDim.z).
template <class T, bool kTranspose, bool kFixup>
__global__ void __launch_bounds__(kTileChannels* kTileRows)
    toeplitz_direct_apply(ToeplitzParams p, const int* __restrict__ column_flags,
                          const int* __restrict__ channel_flags) {
  __shared__ float sx[kDirectInputs][kTileChannels + 1];
  __shared__ float sa[kTileChannels][kDirectWindow + 2];
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const T* a = static_cast<const T*>(p.coefficients);
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTileChannels + tx;
  constexpr int kPerThread = kDirectOutputs / kTileRows;
  for (std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * kTileChannels; c0 < p.channels;
       c0 += static_cast<std::int64_t>(gridDim.y) * kTileChannels) {
    const std::int64_t c = c0 + tx;
    for (std::int64_t n = blockIdx.z; n < p.sequences; n += gridDim.z) {
      const SequenceRange sq = toeplitz_sequence(p, n);
      bool mine = c < p.channels;
      if (kFixup) mine = mine && column_flagged(column_flags, channel_flags, n * p.channels + c, c);
      if (!__syncthreads_or(mine)) continue;
      for (std::int64_t i0 = static_cast<std::int64_t>(blockIdx.x) * kDirectOutputs; i0 < sq.length;
           i0 += static_cast<std::int64_t>(gridDim.x) * kDirectOutputs) {
        float acc[kPerThread] = {};
        // The inputs that reach outputs [i0, i0 + 64): causal forward j <= i, causal transposed j >= i.
        std::int64_t j_begin = 0, j_end = sq.length;
        if (p.causal && !kTranspose) j_end = i0 + kDirectOutputs < sq.length ? i0 + kDirectOutputs : sq.length;
        if (p.causal && kTranspose) j_begin = i0;
        for (std::int64_t j0 = j_begin; j0 < j_end; j0 += kDirectInputs) {
#pragma unroll
          for (int u = 0; u < kDirectInputs / kTileRows; ++u) {
            const std::int64_t j = j0 + ty + u * kTileRows;
            sx[ty + u * kTileRows][tx] =
                j < j_end && c < p.channels
                    ? to_float(in[sq.batch * p.s_in.s0 + (sq.start + j) * p.s_in.s1 + c * p.s_in.s2])
                    : 0.f;
          }
          // Window entry d: i - j = i0 - j0 - 63 + d.
          for (int e = tid; e < kTileChannels * kDirectWindow; e += kTileChannels * kTileRows) {
            const int lane = e / kDirectWindow, d = e - lane * kDirectWindow;
            const std::int64_t ch = c0 + lane, diff = i0 - j0 - (kDirectInputs - 1) + d, r = kTranspose ? -diff : diff;
            const bool valid = ch < p.channels && r < p.cover && -r < p.cover && (!p.causal || r >= 0);
            sa[lane][d] = valid ? to_float(a[ch * p.s_a.s0 + (p.center + r) * p.s_a.s1]) : 0.f;
          }
          __syncthreads();
          const int inputs = static_cast<int>(j_end - j0 < kDirectInputs ? j_end - j0 : kDirectInputs);
          for (int jj = 0; jj < inputs; ++jj) {
            const float xv = sx[jj][tx];
#pragma unroll
            for (int u = 0; u < kPerThread; ++u) {
              const int ii = ty + u * kTileRows;  // output i0 + ii, input j0 + jj: the same over the warp
              const std::int64_t diff = (i0 + ii) - (j0 + jj);
              const bool pair = i0 + ii < sq.length && (!p.causal || (kTranspose ? diff <= 0 : diff >= 0));
              if (pair) acc[u] = fmaf(sa[tx][ii - jj + kDirectInputs - 1], xv, acc[u]);
            }
          }
          __syncthreads();
        }
        if (mine)
#pragma unroll
          for (int u = 0; u < kPerThread; ++u) {
            const std::int64_t i = i0 + ty + u * kTileRows;
            if (i < sq.length)
              out[sq.batch * p.s_out.s0 + (sq.start + i) * p.s_out.s1 + c * p.s_out.s2] = from_float<T>(acc[u]);
          }
      }
    }
  }
}

// The coefficient gradient by direct sums over every sequence: da[c, center + r] for one r and
// channel per thread (32 channels x 32 r per block), written in the element type.
// Grid: (ceil(count / 32), ceil(C / 32)).
template <class T>
__global__ void __launch_bounds__(kTileChannels* kTileRows)
    toeplitz_direct_coefficient_grad(ToeplitzParams p, T* __restrict__ da, Strides3 s_da) {
  const T* dy = static_cast<const T*>(p.in);
  const T* x = static_cast<const T*>(p.in2);
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.y) * kTileChannels + tx; c < p.channels;
       c += static_cast<std::int64_t>(gridDim.y) * kTileChannels)
    for (int u = 0; u < 32 / kTileRows; ++u) {
      const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * 32 + ty + u * kTileRows;
      if (i >= p.count) break;
      const std::int64_t r = i - p.center;
      float acc = 0.f;
      for (std::int64_t n = 0; n < p.sequences; ++n) {
        const SequenceRange sq = toeplitz_sequence(p, n);
        if (r >= sq.length || -r >= sq.length) continue;
        const std::int64_t t_begin = r > 0 ? r : 0, t_end = r < 0 ? sq.length + r : sq.length;
        for (std::int64_t t = t_begin; t < t_end; ++t)
          acc = fmaf(to_float(dy[sq.batch * p.s_in.s0 + (sq.start + t) * p.s_in.s1 + c * p.s_in.s2]),
                     to_float(x[sq.batch * p.s_in2.s0 + (sq.start + t - r) * p.s_in2.s1 + c * p.s_in2.s2]), acc);
      }
      da[c * s_da.s0 + i * s_da.s1] = from_float<T>(acc);
    }
}

// The FFT path's fix-up of the coefficient gradient: the flagged columns' direct sums added to
// coefficient_grad (fp32 [C, count]). One block per channel (most exit at once), threads over r.
template <class T>
__global__ void __launch_bounds__(256) toeplitz_fixup_coefficient_grad(ToeplitzParams p) {
  const T* dy = static_cast<const T*>(p.in);
  const T* x = static_cast<const T*>(p.in2);
  for (std::int64_t c = blockIdx.x; c < p.channels; c += gridDim.x) {
    for (std::int64_t n = 0; n < p.sequences; ++n) {
      const std::int64_t column = n * p.channels + c;
      if (!p.column_flags[column] && !p.column_flags2[column]) continue;  // uniform over the block
      const SequenceRange sq = toeplitz_sequence(p, n);
      for (std::int64_t i = threadIdx.x; i < p.count; i += blockDim.x) {
        const std::int64_t r = i - p.center;
        if (r >= sq.length || -r >= sq.length) continue;
        const std::int64_t t_begin = r > 0 ? r : 0, t_end = r < 0 ? sq.length + r : sq.length;
        float acc = 0.f;
        for (std::int64_t t = t_begin; t < t_end; ++t)
          acc = fmaf(to_float(dy[sq.batch * p.s_in.s0 + (sq.start + t) * p.s_in.s1 + c * p.s_in.s2]),
                     to_float(x[sq.batch * p.s_in2.s0 + (sq.start + t - r) * p.s_in2.s1 + c * p.s_in2.s2]), acc);
        p.coefficient_grad[c * p.count + i] += acc;
      }
    }
  }
}

// Decode: for each of the m new tokens, in order, the history row `position + i` = x_t[b, i] and
// y_t[b, i] = sum_{s <= t} a[t - s] h[s]. One block per (32 channels, batch row); the 8 thread rows
// split s and add up in shared memory. Grid: (ceil(C / 32), B in steps of gridDim.y).
template <class T>
__global__ void __launch_bounds__(kTileChannels* kTileRows) toeplitz_step(ToeplitzParams p) {
  __shared__ float partial[kTileRows][kTileChannels];
  const T* x = static_cast<const T*>(p.in);
  T* y = static_cast<T*>(p.out);
  T* h = static_cast<T*>(p.history);
  const T* a = static_cast<const T*>(p.coefficients);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kTileChannels + tx;
  const bool active = c < p.channels;
  for (std::int64_t b = blockIdx.y; b < p.batch; b += gridDim.y) {
    for (std::int64_t i = 0; i < p.tokens; ++i) {
      const std::int64_t t = p.position + i;
      if (ty == 0 && active)
        h[b * p.s_history.s0 + t * p.s_history.s1 + c * p.s_history.s2] =
            x[b * p.s_in.s0 + i * p.s_in.s1 + c * p.s_in.s2];
      __syncthreads();  // the block's own history writes are visible to it after the barrier
      float acc = 0.f;
      if (active)
        for (std::int64_t s = ty; s <= t; s += kTileRows)
          acc = fmaf(to_float(a[c * p.s_a.s0 + (t - s) * p.s_a.s1]),
                     to_float(h[b * p.s_history.s0 + s * p.s_history.s1 + c * p.s_history.s2]), acc);
      partial[ty][tx] = acc;
      __syncthreads();
      if (ty == 0 && active) {
        float sum = 0.f;
#pragma unroll
        for (int r = 0; r < kTileRows; ++r) sum += partial[r][tx];
        y[b * p.s_out.s0 + i * p.s_out.s1 + c * p.s_out.s2] = from_float<T>(sum);
      }
      __syncthreads();
    }
  }
}

}  // namespace lcsm::cuda::detail
