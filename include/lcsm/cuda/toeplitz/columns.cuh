// The FFT path's data movement around cuFFT: sequences [B, n, C] (channels contiguous) to one fp32
// column per (sequence, channel) zero-padded to the FFT length L, and back; the coefficient
// columns (a_r at row r mod L); the spectral products; the coefficient gradient's spectrum summed
// over sequences. Every column that holds a non-finite value is flagged: the FFT would spread it
// over the whole column, so its outputs come from the direct sums instead (toeplitz/direct.cuh).
// Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/toeplitz/params.cuh"

namespace lcsm::cuda::detail {

// A transposing tile: 32 tokens x 32 channels, 32 x 8 threads.
constexpr int kTileTokens = 32, kTileChannels = 32, kTileRows = 8;

struct SequenceRange {
  std::int64_t batch, start, length;
};

__device__ __forceinline__ std::int64_t toeplitz_offset(const ToeplitzParams& p, std::int64_t i) {
  const std::int64_t x = p.cu_seqlens_int64 ? static_cast<const std::int64_t*>(p.cu_seqlens)[i]
                                            : static_cast<const std::int32_t*>(p.cu_seqlens)[i];
  return x < 0 ? 0 : (x > p.time ? p.time : x);  // contents are not validated: never index outside
}

// Sequence s: its batch row, first token and length, clamped to the coefficients' cover (with
// cu_seqlens the host never reads the offsets; a longer sequence's tail is not computed).
__device__ __forceinline__ SequenceRange toeplitz_sequence(const ToeplitzParams& p, std::int64_t s) {
  if (!p.cu_seqlens) return {s, 0, p.time < p.cover ? p.time : p.cover};
  const std::int64_t a = toeplitz_offset(p, s), b = toeplitz_offset(p, s + 1);
  std::int64_t l = b > a ? b - a : 0;
  if (l > p.cover) l = p.cover;
  return {0, a, l};
}

// The loop heads of the transposing kernels: the block's token tile (blockIdx.x), then its channel
// tiles (from blockIdx.y, in steps of gridDim.y) and sequences (from blockIdx.z, in steps of
// gridDim.z); body(t0, c0, n, sequence n) once per (channel tile, sequence), uniform over the block.
template <class Body>
__device__ __forceinline__ void for_each_column_tile(const ToeplitzParams& p, Body&& body) {
  const std::int64_t t0 = static_cast<std::int64_t>(blockIdx.x) * kTileTokens;
  for (std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * kTileChannels; c0 < p.channels;
       c0 += static_cast<std::int64_t>(gridDim.y) * kTileChannels)
    for (std::int64_t n = blockIdx.z; n < p.sequences; n += gridDim.z) body(t0, c0, n, toeplitz_sequence(p, n));
}

// columns[(s C + c) ld + t] = src[b, start + t, c] for t < length, 0 up to L; flags[s C + c] = 1
// where a value is not finite. Grid: (L / 32, channel tiles and sequences in steps of gridDim.y, .z).
template <class T>
__global__ void __launch_bounds__(kTileChannels* kTileRows)
    gather_columns(ToeplitzParams p, const T* __restrict__ src, Strides3 s, float* __restrict__ columns,
                   int* __restrict__ flags) {
  __shared__ float tile[kTileTokens][kTileChannels + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for_each_column_tile(p, [&](std::int64_t t0, std::int64_t c0, std::int64_t n, const SequenceRange& sq) {
    const std::int64_t c = c0 + tx;
#pragma unroll
    for (int u = 0; u < kTileTokens / kTileRows; ++u) {
      const std::int64_t t = t0 + ty + u * kTileRows;
      float v = 0.f;
      if (t < sq.length && c < p.channels) {
        v = to_float(src[sq.batch * s.s0 + (sq.start + t) * s.s1 + c * s.s2]);
        if (!isfinite(v)) atomicOr(&flags[n * p.channels + c], 1);
      }
      tile[ty + u * kTileRows][tx] = v;
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kTileChannels / kTileRows; ++u) {
      const std::int64_t cc = c0 + ty + u * kTileRows;
      if (cc < p.channels) columns[(n * p.channels + cc) * p.ld + t0 + tx] = tile[tx][ty + u * kTileRows];
    }
    __syncthreads();
  });
}

// The transpose back: dst[b, start + t, c] = columns[(s C + c) ld + t] for t < length, except
// where the column is flagged (flags per column and per channel; either may be null).
template <class T>
__global__ void __launch_bounds__(kTileChannels* kTileRows)
    scatter_columns(ToeplitzParams p, const float* __restrict__ columns, T* __restrict__ dst, Strides3 s,
                    const int* __restrict__ column_flags, const int* __restrict__ channel_flags) {
  __shared__ float tile[kTileChannels][kTileTokens + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for_each_column_tile(p, [&](std::int64_t t0, std::int64_t c0, std::int64_t n, const SequenceRange& sq) {
    if (t0 >= sq.length) return;  // uniform over the block
#pragma unroll
    for (int u = 0; u < kTileChannels / kTileRows; ++u) {
      const std::int64_t cc = c0 + ty + u * kTileRows;
      tile[ty + u * kTileRows][tx] = cc < p.channels ? columns[(n * p.channels + cc) * p.ld + t0 + tx] : 0.f;
    }
    __syncthreads();
    const std::int64_t c = c0 + tx;
    const bool skip =
        c >= p.channels || (column_flags && column_flags[n * p.channels + c]) || (channel_flags && channel_flags[c]);
#pragma unroll
    for (int u = 0; u < kTileTokens / kTileRows; ++u) {
      const std::int64_t t = t0 + ty + u * kTileRows;
      if (!skip && t < sq.length)
        dst[sq.batch * s.s0 + (sq.start + t) * s.s1 + c * s.s2] = from_float<T>(tile[tx][ty + u * kTileRows]);
    }
    __syncthreads();
  });
}

// Coefficient columns: row j of channel c holds a_r with r = j (0 <= j < cover) or, bidirectional,
// r = j - L (j > L - cover); 0 elsewhere. flags[c] = 1 where a coefficient is not finite.
// Grid: (ceil(L / 256), channels in steps of gridDim.y).
template <class T>
__global__ void __launch_bounds__(256)
    gather_coefficients(ToeplitzParams p, float* __restrict__ columns, int* __restrict__ flags) {
  const T* a = static_cast<const T*>(p.coefficients);
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * 256 + threadIdx.x;
  if (j >= p.fft_length) return;
  for (std::int64_t c = blockIdx.y; c < p.channels; c += gridDim.y) {
    std::int64_t r = 0;
    bool used = false;
    if (j < p.cover) r = j, used = true;
    else if (!p.causal && j > p.fft_length - p.cover) r = j - p.fft_length, used = true;
    float v = 0.f;
    if (used) {
      v = to_float(a[c * p.s_a.s0 + (p.center + r) * p.s_a.s1]);
      if (!isfinite(v)) atomicOr(&flags[c], 1);
    }
    columns[c * p.ld + j] = v;
  }
}

// Spectra (bins of L / 2 + 1 complex values, in place): column (s, c) *= A_c / L, or conj(A_c) / L
// for the input gradient. Grid-stride over every bin of every column.
template <int = 0>  // a template: defined in a header, included by many translation units
__global__ void __launch_bounds__(256) multiply_spectra(ToeplitzParams p, float* __restrict__ columns, bool conjugate) {
  const std::int64_t bins = p.fft_length / 2 + 1, total = p.sequences * p.channels * bins;
  const float scale = 1.f / static_cast<float>(p.fft_length);
  const float sign = conjugate ? -1.f : 1.f;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t column = e / bins, k = e - column * bins, c = column % p.channels;
    float2* x = reinterpret_cast<float2*>(columns + column * p.ld) + k;
    const float2 a = reinterpret_cast<const float2*>(p.coefficient_columns + c * p.ld)[k];
    const float ar = a.x * scale, ai = sign * a.y * scale;
    const float2 v = *x;
    *x = make_float2(ar * v.x - ai * v.y, ar * v.y + ai * v.x);
  }
}

// The coefficient gradient's spectrum: sum over sequences of DY conj(X) / L per channel and bin,
// skipping flagged columns (their part comes from the direct sums), into the first C columns of
// the x columns (each bin read and written by one thread). Grid-stride over C x bins.
template <int = 0>
__global__ void __launch_bounds__(256) sum_gradient_spectra(ToeplitzParams p) {
  const std::int64_t bins = p.fft_length / 2 + 1, total = p.channels * bins;
  const float scale = 1.f / static_cast<float>(p.fft_length);
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = e / bins, k = e - c * bins;
    float re = 0.f, im = 0.f;
    for (std::int64_t n = 0; n < p.sequences; ++n) {
      const std::int64_t column = n * p.channels + c;
      if (p.column_flags[column] || p.column_flags2[column]) continue;
      const float2 dy = reinterpret_cast<const float2*>(p.columns + column * p.ld)[k];
      const float2 x = reinterpret_cast<const float2*>(p.columns2 + column * p.ld)[k];
      re += dy.x * x.x + dy.y * x.y;
      im += dy.y * x.x - dy.x * x.y;
    }
    reinterpret_cast<float2*>(p.columns2 + c * p.ld)[k] = make_float2(re * scale, im * scale);
  }
}

// The longest sequence (clamped to the cover): the reach of the coefficient gradient. One block.
template <int = 0>
__global__ void __launch_bounds__(256) longest_sequence(ToeplitzParams p) {
  __shared__ std::int64_t best[256];
  std::int64_t m = 0;
  for (std::int64_t n = threadIdx.x; n < p.sequences; n += blockDim.x) {
    const std::int64_t l = toeplitz_sequence(p, n).length;
    m = l > m ? l : m;
  }
  best[threadIdx.x] = m;
  __syncthreads();
  for (int w = 128; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w && best[threadIdx.x + w] > best[threadIdx.x])
      best[threadIdx.x] = best[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *p.longest = best[0];
}

// coefficient_grad[c, center + r] = the inverse transform's row r mod L for |r| < longest (r >= 0
// when causal), exactly 0 beyond (no sequence reaches there). Grid-stride over C x count.
template <int = 0>
__global__ void __launch_bounds__(256) gradient_from_spectrum(ToeplitzParams p) {
  const std::int64_t total = p.channels * p.count, longest = *p.longest;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = e / p.count, r = e - c * p.count - p.center;
    const bool reached = r < longest && -r < longest;
    const std::int64_t row = r >= 0 ? r : r + p.fft_length;
    p.coefficient_grad[e] = reached ? p.columns2[c * p.ld + row] : 0.f;
  }
}

// da[c, i] = coefficient_grad[c, i] in the element type.
template <class T>
__global__ void __launch_bounds__(256) write_coefficient_grad(ToeplitzParams p, T* __restrict__ da, Strides3 s) {
  const std::int64_t total = p.channels * p.count;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = e / p.count, i = e - c * p.count;
    da[c * s.s0 + i * s.s1] = from_float<T>(p.coefficient_grad[e]);
  }
}

// da = 0 everywhere (a backward without tokens).
template <class T>
__global__ void __launch_bounds__(256)
    fill_coefficient_grad(T* __restrict__ da, Strides3 s, std::int64_t channels, std::int64_t count) {
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < channels * count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = e / count, i = e - c * count;
    da[c * s.s0 + i * s.s1] = from_float<T>(0.f);
  }
}

}  // namespace lcsm::cuda::detail
