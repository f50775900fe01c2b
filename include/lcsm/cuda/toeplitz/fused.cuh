// The Toeplitz forward's fused FFT convolution: three kernels of the library's own instead of
// cuFFT's transforms around gather, multiply and scatter passes (toeplitz/columns.cuh), so that the
// columns cross memory three times instead of about ten. Device code.
//
// Two channels ride in one complex signal, z = x_c + i x_{c+1} (the same for the coefficients), and
// the length L = N1 N2 transform is the four-step one, its spectrum left in the order the steps make
// (bin k = k1 + N1 k2 at [k1][k2]) because the product does not care:
//   columns (pass 1): for each t2, the N1-point transform over t1 of z[N2 t1 + t2], times w_L^(t2 k1),
//                     stored at [k1][t2];
//   rows (pass 2):    for each k1, the N2-point transform over t2: bins k1 + N1 k2; the two channels
//                     apart (bin k and its mirror L - k, which sits in row N1 - k1: one block takes
//                     both rows), Y = A X / L per channel, the pair packed again, the inverse N2-point
//                     transform, times w_L^(-t2 k1), stored in place;
//   outputs (pass 3): for each t2, the inverse N1-point transform over k1: y[N2 t1 + t2] (real part:
//                     channel c, imaginary part: channel c + 1).
// The coefficient columns take pass 1 too; pass 2 reuses a block's coefficient rows for every
// sequence. Each block transforms 8192 points in shared memory (Stockham, radix 16, autosort), roots
// and twiddles from tables made once per block. Flags as on the cuFFT path, for both channels of a
// pair (a non-finite value in one spreads to its partner through the shared transform). Which calls
// take it: fused_preferred (Kernels::automatic) or every fused_length (Kernels::fused_fft), run.cuh.
#pragma once

#include <cstdint>

#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/toeplitz/columns.cuh"
#include "lcsm/cuda/toeplitz/params.cuh"

namespace lcsm::cuda::detail {

constexpr int kFusedThreads = 256;
constexpr int kFusedPoints = 8192;                                // complex points per block
constexpr int kFusedPerThread = kFusedPoints / kFusedThreads;     // 32
constexpr int kFusedMaxRow = 2048;                                // N1, N2 <= 2048: L <= 2^22
constexpr int kFusedMinLength = 4096, kFusedMaxLength = 1 << 22;  // the L the fused path takes

// The split L = N1 N2 (N1 <= N2, both powers of two) and the blocks' shapes (powers of two).
struct FusedSplit {
  int log_n1, log_n2;
  __host__ __device__ int n1() const { return 1 << log_n1; }
  __host__ __device__ int n2() const { return 1 << log_n2; }
  // Pass 1 and 3: a block holds `width` consecutive t2 (runs of `width` complex values in memory)
  // times `pairs` channel pairs, each a column of N1 points: 8192 points.
  __host__ __device__ int log_width() const { return 13 - log_n1 < 4 ? 13 - log_n1 : 4; }
  __host__ __device__ int log_pairs() const { return 13 - log_n1 - log_width(); }
  __host__ __device__ int width() const { return 1 << log_width(); }
  __host__ __device__ int pairs() const { return 1 << log_pairs(); }
  // Pass 2: a block holds `units` row pairs (k1, N1 - k1) of the coefficients and of one sequence.
  __host__ __device__ int units() const { return kFusedMaxRow >> log_n2; }
};

inline bool fused_length(std::int64_t L) { return L >= kFusedMinLength && L <= kFusedMaxLength; }
// Where Kernels::automatic takes it: the lengths where it was measured faster than cuFFT (H100, C =
// 1024, bf16, radix-16 stages, 2026-12-07: 1.04x at L = 2^17, 1.02x at 2^21, and between them by
// interpolation; 2x slower at 2^13, where cuFFT's passes stay in L2; docs/performance.md).
inline bool fused_preferred(std::int64_t L) { return L >= (std::int64_t{1} << 16) && L <= (std::int64_t{1} << 21); }
inline FusedSplit fused_split(std::int64_t L) {
  int k = 0;
  while ((std::int64_t{1} << k) < L) ++k;
  return FusedSplit{k / 2, k - k / 2};
}

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
  return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
__device__ __forceinline__ float2 cadd(float2 a, float2 b) { return make_float2(a.x + b.x, a.y + b.y); }
__device__ __forceinline__ float2 csub(float2 a, float2 b) { return make_float2(a.x - b.x, a.y - b.y); }
__device__ __forceinline__ float2 conjugate(float2 a) { return make_float2(a.x, -a.y); }

// exp(sign 2 pi i num / den), the argument reduced exactly (num, den < 2^24).
__device__ __forceinline__ float2 unit_root(std::int64_t num, std::int64_t den, float sign) {
  float s, c;
  sincospif(2.f * static_cast<float>(num % den) / static_cast<float>(den), &s, &c);
  return make_float2(c, sign * s);
}

// table[j] = w_N^j = exp(-2 pi i j / N), j < N (the forward's roots; the inverse conjugates).
__device__ __forceinline__ void fill_roots(float2* table, int log_n) {
  for (int j = threadIdx.x; j < (1 << log_n); j += kFusedThreads) table[j] = unit_root(j, 1 << log_n, -1.f);
  __syncthreads();
}

// The four-point DFT in place: a_r <- sum_m a_m w_4^(r m) (w_4 = e^(-i pi / 2); kInverse: e^(+i pi / 2)).
template <bool kInverse>
__device__ __forceinline__ void dft4(float2& a0, float2& a1, float2& a2, float2& a3) {
  const float2 t0 = cadd(a0, a2), t1 = csub(a0, a2), t2 = cadd(a1, a3), d = csub(a1, a3);
  // (a1 - a3) times -i (forward) or +i (inverse).
  const float2 t3 = kInverse ? make_float2(-d.y, d.x) : make_float2(d.y, -d.x);
  a0 = cadd(t0, t2), a1 = cadd(t1, t3), a2 = csub(t0, t2), a3 = csub(t1, t3);
}

// The sixteen-point DFT in place as 4 x 4 (m = m1 + 4 m2, r = r2 + 4 r1): a DFT over m2 for each
// m1, the twiddles w_16^(r2 m1), a DFT over m1 for each r2. Output r lands at a[4 (r % 4) + r / 4].
// w16(x) = w_16^x from the block's roots table.
template <bool kInverse, class W16>
__device__ __forceinline__ void dft16(float2 (&a)[16], W16 w16) {
#pragma unroll
  for (int m1 = 0; m1 < 4; ++m1) dft4<kInverse>(a[m1], a[m1 + 4], a[m1 + 8], a[m1 + 12]);
#pragma unroll
  for (int r2 = 1; r2 < 4; ++r2)
#pragma unroll
    for (int m1 = 1; m1 < 4; ++m1) a[4 * r2 + m1] = cmul(a[4 * r2 + m1], w16(r2 * m1));
#pragma unroll
  for (int r2 = 0; r2 < 4; ++r2) dft4<kInverse>(a[4 * r2], a[4 * r2 + 1], a[4 * r2 + 2], a[4 * r2 + 3]);
}

// In-place transforms of `count` sequences of N = 2^log_n points in shared memory (sequence j at
// data + j * stride, elements contiguous), unscaled; kInverse: the positive exponent. Stockham
// autosort (natural order in and out), radix 16 (two radix-4 steps in registers per trip through
// shared memory; measured, H100 2026-12-07: n = 64K 5.35 -> 5.13 ms, 1M 131 -> 112) while four
// bits remain, then radix 4, and one radix-2 stage when the bits left are odd: each stage reads every point into
// registers, waits, and writes them back. roots: fill_roots(log_n). The index arithmetic of the
// radix-16 stages was checked against numpy's FFT in a float64 model of this loop (every log_n to
// 11, forward and inverse).
template <bool kInverse>
__device__ void block_fft(float2* data, int count, int stride, int log_n, const float2* roots) {
  const int n = 1 << log_n, tid = threadIdx.x;
  const int total = count << log_n;
  for (int log_ns = 0; log_ns < log_n;) {
    const int bits_left = log_n - log_ns;
    const int log_r = bits_left >= 4 ? 4 : (bits_left >= 2 ? 2 : 1);
    const int log_quarter = log_n - log_r;  // N / R butterflies a sequence
    const int butterflies = total >> log_r, per_thread = kFusedPerThread >> log_r;
    float2 v[kFusedPerThread];
#pragma unroll
    for (int i = 0; i < kFusedPerThread / 2; ++i) {  // radix 2 needs 16 butterflies a thread, radix 4 8, 16 2
      const int b = tid + i * kFusedThreads;
      if (i >= per_thread || b >= butterflies) continue;
      const int seq = b >> log_quarter, j = b & ((1 << log_quarter) - 1);
      const float2* src = data + seq * stride + j;
      if (log_r == 4) {
        if (i < kFusedPerThread / 16)
#pragma unroll
          for (int r = 0; r < 16; ++r) v[16 * i + r] = src[r << log_quarter];
      } else if (log_r == 2) {
#pragma unroll
        for (int r = 0; r < 4; ++r) v[4 * i + r] = src[r << log_quarter];
      } else {
        v[2 * i] = src[0], v[2 * i + 1] = src[1 << log_quarter];
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kFusedPerThread / 2; ++i) {
      const int b = tid + i * kFusedThreads;
      if (i >= per_thread || b >= butterflies) continue;
      const int seq = b >> log_quarter, j = b & ((1 << log_quarter) - 1);
      const int k = j & ((1 << log_ns) - 1);
      // w_{Ns R}^(r k) = w_N^(r k N / (Ns R)).
      const int step = k << (log_n - log_ns - log_r);
      float2* dst = data + seq * stride + ((j >> log_ns) << (log_ns + log_r)) + k;
      auto table_root = [&](int m) {  // w_N^m, conjugated for the inverse
        const float2 w = roots[m & (n - 1)];
        return kInverse ? conjugate(w) : w;
      };
      auto root = [&](int r) { return table_root(r * step); };
      if (log_r == 4) {
        if (i < kFusedPerThread / 16) {
          float2 a[16];
          a[0] = v[16 * i];
#pragma unroll
          for (int r = 1; r < 16; ++r) a[r] = cmul(v[16 * i + r], root(r));
          dft16<kInverse>(a, [&](int x) { return table_root(x << (log_n - 4)); });  // w_16^x
#pragma unroll
          for (int r = 0; r < 16; ++r) dst[r << log_ns] = a[4 * (r & 3) + (r >> 2)];
        }
      } else if (log_r == 2) {
        float2 a0 = v[4 * i], a1 = cmul(v[4 * i + 1], root(1)), a2 = cmul(v[4 * i + 2], root(2)),
               a3 = cmul(v[4 * i + 3], root(3));
        dft4<kInverse>(a0, a1, a2, a3);
        dst[0] = a0;
        dst[1 << log_ns] = a1;
        dst[2 << log_ns] = a2;
        dst[3 << log_ns] = a3;
      } else {
        const float2 a0 = v[2 * i], a1 = cmul(v[2 * i + 1], root(1));
        dst[0] = cadd(a0, a1);
        dst[1 << log_ns] = csub(a0, a1);
      }
    }
    __syncthreads();
    log_ns += log_r;
  }
}

// The four-step twiddle w_L^m, m = t2 k1 < L, as w_(L / F)^(m / F) w_L^(m mod F) with F = 2^log_fine:
// coarse is a block's roots table (w_N1 in pass 1, F = N2; w_N2 in pass 2, F = N1), fine[r] = w_L^r
// for r < F (fill_fine), made once per block.
__device__ __forceinline__ void fill_fine(float2* fine, int log_fine, const FusedSplit& split) {
  const std::int64_t L = std::int64_t{1} << (split.log_n1 + split.log_n2);
  for (int j = threadIdx.x; j < (1 << log_fine); j += kFusedThreads) fine[j] = unit_root(j, L, -1.f);
  __syncthreads();
}
__device__ __forceinline__ float2 twiddle(const float2* coarse, const float2* fine, std::int64_t m, int log_fine) {
  return cmul(coarse[m >> log_fine], fine[m & ((1 << log_fine) - 1)]);
}

// Shared memory of a fused block: the points (padded by one per column of passes 1 and 3), the roots
// of its transforms (also the coarse twiddles) and the fine twiddles.
constexpr int kFusedSmemBytes = (kFusedPoints + kFusedPoints / 64 + 2 * kFusedMaxRow) * 8;

// Element (pair, t2, t1) of a block of passes 1 and 3 for its i-th point: pair fastest (the loads
// of x and the stores of y: a pair's channels side by side, neighbouring pairs in the blocks that
// run beside it), or t2 fastest (the intermediate's runs of `width` complex values).
struct ColumnPoint {
  int pp, w, t1;
};
__device__ __forceinline__ ColumnPoint pair_fastest(const FusedSplit& split, int e) {
  return {e & (split.pairs() - 1), (e >> split.log_pairs()) & (split.width() - 1),
          e >> (split.log_pairs() + split.log_width())};
}
__device__ __forceinline__ ColumnPoint t2_fastest(const FusedSplit& split, int e) {
  return {(e >> split.log_width()) & (split.pairs() - 1), e & (split.width() - 1),
          e >> (split.log_pairs() + split.log_width())};
}

// Pass 1 on the sequences (kCoefficients false: column (s, p) of x) or on the coefficients (true:
// the pair's coefficient columns, a_r at row r mod L). Grid: (pair blocks in steps of gridDim.x,
// N2 / width, sequences in steps of gridDim.z). out: [sequence][pair][k1][t2] complex.
template <class T, bool kCoefficients>
__global__ void __launch_bounds__(kFusedThreads, 2)
    fused_columns(ToeplitzParams p, FusedSplit split, const T* __restrict__ src, Strides3 s, float2* __restrict__ out,
                  int* __restrict__ flags) {
  extern __shared__ float2 fused_smem[];
  const int n1 = split.n1(), width = split.width(), pairs = split.pairs(), stride = n1 + 1;
  float2* points = fused_smem;
  float2* roots = fused_smem + pairs * width * stride;
  float2* fine = roots + n1;
  fill_roots(roots, split.log_n1);
  fill_fine(fine, split.log_n2, split);
  const std::int64_t L = std::int64_t{n1} << split.log_n2, total_pairs = (p.channels + 1) / 2;
  const std::int64_t t2_0 = static_cast<std::int64_t>(blockIdx.y) * width;
  const std::int64_t sequences = kCoefficients ? 1 : p.sequences;
  for (std::int64_t p0 = static_cast<std::int64_t>(blockIdx.x) * pairs; p0 < total_pairs;
       p0 += static_cast<std::int64_t>(gridDim.x) * pairs) {
    for (std::int64_t n = blockIdx.z; n < sequences; n += gridDim.z) {
      const SequenceRange sq = kCoefficients ? SequenceRange{0, 0, 0} : toeplitz_sequence(p, n);
      // Two rounds of 16 points a thread, every load of a round in flight before the first is used.
#pragma unroll 1
      for (int round = 0; round < 2; ++round) {
        constexpr int kRound = kFusedPerThread / 2;
        T raw[kRound][2];
#pragma unroll
        for (int i = 0; i < kRound; ++i) {
          const ColumnPoint q = pair_fastest(split, threadIdx.x + (round * kRound + i) * kFusedThreads);
          const std::int64_t j = (static_cast<std::int64_t>(q.t1) << split.log_n2) + t2_0 + q.w;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const std::int64_t c = 2 * (p0 + q.pp) + h;
            bool use = c < p.channels;
            std::int64_t at = 0;
            if constexpr (kCoefficients) {
              std::int64_t r = j;
              if (!p.causal && j > L - p.cover) r = j - L;
              else use = use && j < p.cover;
              at = c * s.s0 + (p.center + r) * s.s1;
            } else {
              use = use && j < sq.length;
              at = sq.batch * s.s0 + (sq.start + j) * s.s1 + c * s.s2;
            }
            raw[i][h] = use ? src[at] : from_float<T>(0.f);  // zero is finite: never flagged
          }
        }
#pragma unroll
        for (int i = 0; i < kRound; ++i) {
          const ColumnPoint q = pair_fastest(split, threadIdx.x + (round * kRound + i) * kFusedThreads);
          float v[2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            v[h] = to_float(raw[i][h]);
            if (!isfinite(v[h])) {
              const std::int64_t c = 2 * (p0 + q.pp) + h;
              atomicOr(&flags[kCoefficients ? c : n * p.channels + c], 1);
            }
          }
          points[((q.pp << split.log_width()) + q.w) * stride + q.t1] = make_float2(v[0], v[1]);
        }
      }
      __syncthreads();
      block_fft<false>(points, pairs * width, stride, split.log_n1, roots);
      // Store times w_L^(t2 k1), t2 fastest.
#pragma unroll 4
      for (int i = 0; i < kFusedPerThread; ++i) {
        const ColumnPoint q = t2_fastest(split, threadIdx.x + i * kFusedThreads);
        const int k1 = q.t1;
        const std::int64_t pair = p0 + q.pp, t2 = t2_0 + q.w;
        if (pair >= total_pairs) continue;
        out[(((n * total_pairs + pair) << split.log_n1) + k1) * split.n2() + t2] = cmul(
            points[((q.pp << split.log_width()) + q.w) * stride + k1], twiddle(roots, fine, t2 * k1, split.log_n2));
      }
      __syncthreads();
    }
  }
}

// Pass 2: blocks of `units` row pairs (k1, N1 - k1) of every pair, the coefficient rows transformed
// once, then each sequence's rows: transform, product, inverse transform, twiddle, stored in place.
// Grid: (unit blocks, pairs in steps of gridDim.y).
template <int = 0>
__global__ void __launch_bounds__(kFusedThreads, 2)
    fused_rows(ToeplitzParams p, FusedSplit split, const float2* __restrict__ coefficient_columns,
               float2* __restrict__ columns) {
  extern __shared__ float2 fused_smem[];
  constexpr int kRowPoints = kFusedPoints / 2 / kFusedThreads;  // 4096 points of one operand: 16 a thread
  const int n1 = split.n1(), n2 = split.n2(), units = split.units();
  const int rows = 2 * units;  // row 2u: k1, row 2u + 1: its mirror N1 - k1
  float2* coef = fused_smem;
  float2* seq = fused_smem + rows * n2;
  float2* roots = fused_smem + 2 * rows * n2;
  float2* fine = roots + n2;
  fill_roots(roots, split.log_n2);
  fill_fine(fine, split.log_n1, split);
  const std::int64_t L = std::int64_t{n1} << split.log_n2, total_pairs = (p.channels + 1) / 2;
  const int unit0 = blockIdx.x * units, last_unit = n1 / 2;  // units 0 .. N1 / 2
  const float scale = 1.f / static_cast<float>(L);
  auto row_k1 = [&](int r) {
    const int u = unit0 + (r >> 1);
    return (r & 1) == 0 ? u : (n1 - u) & (n1 - 1);
  };
  auto load_rows = [&](float2* dst, const float2* src) {  // src: one pair's [k1][t2] block, all loads in flight
    float2 z[kRowPoints];
#pragma unroll
    for (int i = 0; i < kRowPoints; ++i) {
      const int e = threadIdx.x + i * kFusedThreads, r = e >> split.log_n2, t2 = e & (n2 - 1);
      z[i] = unit0 + (r >> 1) <= last_unit ? src[(static_cast<std::int64_t>(row_k1(r)) << split.log_n2) + t2]
                                           : make_float2(0.f, 0.f);
    }
#pragma unroll
    for (int i = 0; i < kRowPoints; ++i) dst[threadIdx.x + i * kFusedThreads] = z[i];
    __syncthreads();
  };
  for (std::int64_t pair = blockIdx.y; pair < total_pairs; pair += gridDim.y) {
    load_rows(coef, coefficient_columns + (pair << (split.log_n1 + split.log_n2)));
    block_fft<false>(coef, rows, n2, split.log_n2, roots);
    for (std::int64_t n = 0; n < p.sequences; ++n) {
      float2* block = columns + ((n * total_pairs + pair) << (split.log_n1 + split.log_n2));
      load_rows(seq, block);
      block_fft<false>(seq, rows, n2, split.log_n2, roots);
      // Bin (k1, k2) and its mirror (N1 - k1, (N2 - k2 - [k1 > 0]) mod N2): X_c = (z + conj(z')) / 2,
      // X_{c+1} = (z - conj(z')) / 2i for both the sequence and the coefficients; W = A_c X_c +
      // i A_{c+1} X_{c+1} at the bin and, the signals being real, conj(A_c X_c) + i conj(A_{c+1}
      // X_{c+1}) at the mirror. One thread a bin of the even rows: each location read and written by
      // one thread (mirror rows of k1 = 0 and N1 / 2 are copies of their own row).
      for (int e = threadIdx.x; e < units * n2; e += kFusedThreads) {
        const int u = e >> split.log_n2, k2 = e & (n2 - 1);
        const int k1 = unit0 + u;
        const int mirror = (n2 - k2 - (k1 > 0 ? 1 : 0)) & (n2 - 1);
        float2* za = seq + (2 * u) * n2 + k2;
        float2* zb = seq + (2 * u + 1) * n2 + mirror;
        const float2 x = *za, xm = conjugate(*zb);
        const float2 a = coef[(2 * u) * n2 + k2], am = conjugate(coef[(2 * u + 1) * n2 + mirror]);
        const float2 x0 = cadd(x, xm), x1d = csub(x, xm), a0 = cadd(a, am), a1d = csub(a, am);
        // X_c = x0 / 2, X_{c+1} = x1d / 2i: A_c X_c = a0 x0 / 4, A_{c+1} X_{c+1} = -a1d x1d / 4.
        const float2 p0 = cmul(a0, x0), p1 = cmul(a1d, x1d);
        const float q = 0.25f * scale;
        const float2 c0 = make_float2(q * p0.x, q * p0.y), c1 = make_float2(-q * p1.x, -q * p1.y);
        *za = make_float2(c0.x - c1.y, c0.y + c1.x);   // c0 + i c1
        *zb = make_float2(c0.x + c1.y, -c0.y + c1.x);  // conj(c0) + i conj(c1)
      }
      __syncthreads();
      block_fft<true>(seq, rows, n2, split.log_n2, roots);
#pragma unroll 4
      for (int i = 0; i < kRowPoints; ++i) {
        const int e = threadIdx.x + i * kFusedThreads, r = e >> split.log_n2, t2 = e & (n2 - 1);
        if (unit0 + (r >> 1) > last_unit) continue;
        const int k1 = row_k1(r);
        block[(static_cast<std::int64_t>(k1) << split.log_n2) + t2] =
            cmul(seq[e], conjugate(twiddle(roots, fine, static_cast<std::int64_t>(t2) * k1, split.log_n1)));
      }
      __syncthreads();
    }
  }
}

// Pass 3: the inverse column transforms and the outputs, flagged columns left to the direct fix-up
// (a pair is skipped whole when either channel or its coefficients are flagged; the flags of both
// are raised so that the fix-up takes both). Grid as pass 1.
template <class T>
__global__ void __launch_bounds__(kFusedThreads, 2)
    fused_outputs(ToeplitzParams p, FusedSplit split, const float2* __restrict__ columns, T* __restrict__ dst,
                  Strides3 s, int* __restrict__ column_flags, int* __restrict__ channel_flags) {
  extern __shared__ float2 fused_smem[];
  const int n1 = split.n1(), width = split.width(), pairs = split.pairs(), stride = n1 + 1;
  float2* points = fused_smem;
  float2* roots = fused_smem + pairs * width * stride;
  fill_roots(roots, split.log_n1);
  const std::int64_t total_pairs = (p.channels + 1) / 2;
  const std::int64_t t2_0 = static_cast<std::int64_t>(blockIdx.y) * width;
  for (std::int64_t p0 = static_cast<std::int64_t>(blockIdx.x) * pairs; p0 < total_pairs;
       p0 += static_cast<std::int64_t>(gridDim.x) * pairs) {
    for (std::int64_t n = blockIdx.z; n < p.sequences; n += gridDim.z) {
      const SequenceRange sq = toeplitz_sequence(p, n);
#pragma unroll 1
      for (int round = 0; round < 2; ++round) {  // as pass 1: 16 loads a thread in flight
        constexpr int kRound = kFusedPerThread / 2;
        float2 z[kRound];
#pragma unroll
        for (int i = 0; i < kRound; ++i) {
          const ColumnPoint q = t2_fastest(split, threadIdx.x + (round * kRound + i) * kFusedThreads);
          const std::int64_t pair = p0 + q.pp;
          z[i] = pair < total_pairs
                     ? columns[(((n * total_pairs + pair) << split.log_n1) + q.t1) * split.n2() + t2_0 + q.w]
                     : make_float2(0.f, 0.f);
        }
#pragma unroll
        for (int i = 0; i < kRound; ++i) {
          const ColumnPoint q = t2_fastest(split, threadIdx.x + (round * kRound + i) * kFusedThreads);
          points[((q.pp << split.log_width()) + q.w) * stride + q.t1] = z[i];
        }
      }
      __syncthreads();
      block_fft<true>(points, pairs * width, stride, split.log_n1, roots);
#pragma unroll 4
      for (int i = 0; i < kFusedPerThread; ++i) {
        const ColumnPoint q = pair_fastest(split, threadIdx.x + i * kFusedThreads);
        const std::int64_t pair = p0 + q.pp, t = (static_cast<std::int64_t>(q.t1) << split.log_n2) + t2_0 + q.w;
        if (pair >= total_pairs || t >= sq.length) continue;
        const std::int64_t c = 2 * pair, column = n * p.channels + c;
        const bool second = c + 1 < p.channels;
        const bool flagged =
            column_flags[column] || channel_flags[c] || (second && (column_flags[column + 1] || channel_flags[c + 1]));
        if (flagged) {  // every block of the pair raises the same flags: the fix-up takes both channels
          column_flags[column] = 1;
          if (second) column_flags[column + 1] = 1;
          continue;
        }
        const float2 v = points[((q.pp << split.log_width()) + q.w) * stride + q.t1];
        T* row = dst + sq.batch * s.s0 + (sq.start + t) * s.s1;
        row[c * s.s2] = from_float<T>(v.x);
        if (second) row[(c + 1) * s.s2] = from_float<T>(v.y);
      }
      __syncthreads();
    }
  }
}

}  // namespace lcsm::cuda::detail
