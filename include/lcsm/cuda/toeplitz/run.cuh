// The Toeplitz convolution's work plan on CUDA (path, FFT length, workspace layout) and its launch
// sequences. Host code.
//
// FFT path (op.use_fft(n), n = the coefficients' length): one zero-padded fp32 column of length
// L = max(32, 2^k >= 2n - 1) per (sequence, channel), transformed in place by cuFFT (columns
// L + 2 floats apart), times the coefficient spectrum, transformed back:
//   y = IFFT(A X) / L,   dx = IFFT(conj(A) DY) / L,   da_r = IFFT(sum over sequences DY conj(X))_r / L.
// With cu_seqlens every sequence takes the coefficients' L (the host does not read the offsets).
// Direct path: the sums themselves (toeplitz/direct.cuh), no workspace.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/error.cuh"
#include "lcsm/cuda/shared_memory.cuh"
#include "lcsm/cuda/toeplitz/columns.cuh"
#include "lcsm/cuda/toeplitz/direct.cuh"
#include "lcsm/cuda/toeplitz/fft_plans.cuh"
#include "lcsm/cuda/toeplitz/fused.cuh"
#include "lcsm/ops/toeplitz.hpp"

namespace lcsm::cuda::detail {

// What one call runs and the workspace it needs: offsets of each buffer, 256-byte aligned.
struct ToeplitzPlan {
  bool fft = false;
  bool fused = false;           // the forward's own FFT convolution (toeplitz/fused.cuh) instead of cuFFT's
  bool dx = false, da = false;  // backward: which gradients
  std::int64_t length = 0, ld = 0, columns = 0;  // L, the column distance (floats), sequences x C
  std::size_t off_columns = 0, off_columns2 = 0, off_coefficients = 0, off_flags = 0, off_flags2 = 0,
              off_coefficient_flags = 0, off_grad = 0, off_longest = 0, off_work = 0, bytes = 0;
};

enum class ToeplitzEntry { forward, backward };

// The FFT length for sequences of up to n tokens.
inline std::int64_t toeplitz_fft_length(std::int64_t n) {
  std::int64_t L = 32;
  while (L < 2 * n - 1) L *= 2;
  return L;
}

// Bytes of `count` elements of `size` bytes, overflow-checked (a named error: sizes come from views).
inline std::size_t toeplitz_bytes(const char* where, std::int64_t count, std::int64_t size) {
  std::int64_t bytes = 0;
  if (lcsm::detail::mul_overflows(count, size, bytes) || bytes > (std::int64_t{1} << 50))
    lcsm::detail::throw_argument(where, "x", "a workspace under 2^50 bytes (channels x sequences x FFT length)",
                                 lcsm::detail::concat(count, " elements of ", size, " bytes"));
  return static_cast<std::size_t>(bytes);
}

template <class T>
ToeplitzPlan plan_toeplitz(const char* where, const ToeplitzConvolution<T>& op, const lcsm::detail::ToeplitzShape& p,
                           ToeplitzEntry entry, bool want_dx, bool want_da, Kernels kernels) {
  ToeplitzPlan plan;
  const std::int64_t n = op.length();
  plan.dx = want_dx, plan.da = want_da;
  plan.fft = n > 0 && op.use_fft(n) && p.time > 0 && p.batch > 0 && p.sequences > 0;
  if (!plan.fft) return plan;
  // 2n - 1 < 2^62 (op.check) and L < 4n: no overflow below.
  if (n > (std::int64_t{1} << 34))
    lcsm::detail::throw_argument(where, "op.coefficients", "n <= 2^34 on the FFT path (one column per channel)",
                                 lcsm::detail::concat("n = ", n));
  plan.length = toeplitz_fft_length(n);
  plan.ld = plan.length + 2;
  std::int64_t columns = 0;
  if (lcsm::detail::mul_overflows(p.sequences, p.channels, columns))
    lcsm::detail::throw_argument(where, "x", "sequences x channels < 2^63",
                                 lcsm::detail::concat(p.sequences, " x ", p.channels));
  plan.columns = columns;
  std::size_t at = 0;
  auto take = [&](std::size_t bytes) {
    const std::size_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  const bool backward = entry == ToeplitzEntry::backward;
  plan.fused = !backward && fused_length(plan.length) &&
               (kernels == Kernels::fused_fft || (kernels == Kernels::automatic && fused_preferred(plan.length)));
  if (plan.fused) {  // [sequence][pair][L] and [pair][L] complex (fused.cuh), the flags
    std::int64_t pair_columns = 0;
    const std::int64_t pairs = (p.channels + 1) / 2;
    if (lcsm::detail::mul_overflows(p.sequences, pairs, pair_columns))
      lcsm::detail::throw_argument(where, "x", "sequences x channels < 2^63",
                                   lcsm::detail::concat(p.sequences, " x ", p.channels));
    plan.off_columns = take(toeplitz_bytes(where, pair_columns, plan.length * 8));
    plan.off_coefficients = take(toeplitz_bytes(where, pairs, plan.length * 8));
    plan.off_flags = take(toeplitz_bytes(where, columns, 4));
    plan.off_flags2 = take(toeplitz_bytes(where, columns, 4));
    plan.off_coefficient_flags = take(toeplitz_bytes(where, p.channels, 4));
    plan.off_work = at;
    plan.bytes = at;
    return plan;
  }
  const std::size_t column_bytes = toeplitz_bytes(where, columns, plan.ld * 4);
  const std::size_t channel_bytes = toeplitz_bytes(where, p.channels, plan.ld * 4);
  plan.off_columns = take(column_bytes);
  if (backward && want_da) plan.off_columns2 = take(column_bytes);
  if (!backward || want_dx) plan.off_coefficients = take(channel_bytes);
  plan.off_flags = take(toeplitz_bytes(where, columns, 4));
  plan.off_flags2 = take(toeplitz_bytes(where, columns, 4));
  plan.off_coefficient_flags = take(toeplitz_bytes(where, p.channels, 4));
  if (backward && want_da) {
    plan.off_grad = take(toeplitz_bytes(where, p.channels, std::max<std::int64_t>(op.coefficients.size(1), 1) * 4));
    plan.off_longest = take(8);
  }
  // cuFFT's work area: the largest of the plans the call executes (fft_plans.cuh: the columns as
  // groups of C, one plan per power of two in the sequence count).
  const std::int64_t L = plan.length, C = p.channels, S = p.sequences;
  std::size_t work = fft_columns_work_bytes(L, C, S, FftDirection::forward);
  if (!backward || want_dx) {
    work = std::max(work, fft_plan(L, C, FftDirection::forward).work_bytes());
    work = std::max(work, fft_columns_work_bytes(L, C, S, FftDirection::inverse));
  }
  if (backward && want_da) work = std::max(work, fft_plan(L, C, FftDirection::inverse).work_bytes());
  plan.off_work = take(work);
  plan.bytes = at;
  return plan;
}

inline void check_toeplitz_workspace(const char* where, const Device& device, const ToeplitzPlan& plan,
                                     const char* query) {
  if (plan.bytes > 0 && (device.workspace.bytes < plan.bytes || device.workspace.data == nullptr))
    lcsm::detail::throw_argument(where, "device.workspace",
                                 lcsm::detail::concat("at least ", plan.bytes, " bytes (", query, ")"),
                                 lcsm::detail::concat(device.workspace.bytes, " bytes at ", device.workspace.data));
  if (plan.bytes > 0 && reinterpret_cast<std::uintptr_t>(device.workspace.data) % 256 != 0)
    lcsm::detail::throw_argument(where, "device.workspace", "256-byte aligned memory (cudaMalloc's)",
                                 lcsm::detail::concat("memory at ", device.workspace.data));
}

template <class V>
Strides3 strides3(const V& v) {
  Strides3 s{0, 0, 0};
  if (v.present()) {
    s.s0 = v.stride(0), s.s1 = v.stride(1);
    if constexpr (V::rank == 3) s.s2 = v.stride(2);
  }
  return s;
}

// The params of a call: sequences, coefficients and the workspace's buffers.
template <class T>
ToeplitzParams toeplitz_params(const ToeplitzConvolution<T>& op, const lcsm::detail::ToeplitzShape& p,
                               const CuSeqlens& cu, const ToeplitzPlan& plan, const Device& device) {
  ToeplitzParams q{};
  q.coefficients = op.coefficients.data();
  q.s_a = strides3(op.coefficients);
  q.count = op.coefficients.size(1);
  q.center = op.center();
  q.cover = op.length();
  q.causal = op.causal;
  q.batch = p.batch, q.time = p.time, q.channels = p.channels, q.sequences = p.sequences;
  q.cu_seqlens = cu.present() ? cu.data() : nullptr;
  q.cu_seqlens_int64 = cu.is_int64();
  q.fft_length = plan.length, q.ld = plan.ld;
  if (plan.fft) {
    unsigned char* base = static_cast<unsigned char*>(device.workspace.data);
    q.columns = reinterpret_cast<float*>(base + plan.off_columns);
    q.columns2 = plan.off_columns2 ? reinterpret_cast<float*>(base + plan.off_columns2) : nullptr;
    q.coefficient_columns = reinterpret_cast<float*>(base + plan.off_coefficients);
    q.column_flags = reinterpret_cast<int*>(base + plan.off_flags);
    q.column_flags2 = reinterpret_cast<int*>(base + plan.off_flags2);
    q.coefficient_flags = reinterpret_cast<int*>(base + plan.off_coefficient_flags);
    q.coefficient_grad = plan.off_grad ? reinterpret_cast<float*>(base + plan.off_grad) : nullptr;
    q.longest = plan.off_longest ? reinterpret_cast<std::int64_t*>(base + plan.off_longest) : nullptr;
  }
  return q;
}

// The FFT path's flags (per column, per column of the backward's x, per channel), adjacent in the
// workspace: cleared by one memset before a call's gathers raise them.
inline void clear_flags(const ToeplitzParams& q, const ToeplitzPlan& plan, cudaStream_t stream) {
  LCSM_CUDA_CHECK(
      cudaMemsetAsync(q.column_flags, 0, plan.off_coefficient_flags - plan.off_flags + 4 * q.channels, stream));
}

// Launch shapes.
inline unsigned toeplitz_grid_limit(std::int64_t n, std::int64_t cap) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(n, cap)));
}
inline dim3 tile_block() { return dim3(kTileChannels, kTileRows); }
inline dim3 column_grid(const ToeplitzParams& q) {
  return dim3(static_cast<unsigned>(q.fft_length / kTileTokens), toeplitz_grid_limit((q.channels + 31) / 32, 65535),
              toeplitz_grid_limit(q.sequences, 65535));
}
inline dim3 direct_grid(const ToeplitzParams& q, bool fixup) {
  const std::int64_t tiles = (q.cover + kDirectOutputs - 1) / kDirectOutputs;
  return dim3(toeplitz_grid_limit(tiles, fixup ? 64 : 1 << 20), toeplitz_grid_limit((q.channels + 31) / 32, 65535),
              toeplitz_grid_limit(q.sequences, 65535));
}
inline unsigned stride_grid(std::int64_t elements) { return toeplitz_grid_limit((elements + 255) / 256, 132 * 16); }

template <class T>
void gather(const ToeplitzParams& q, const View<const T, 3>& src, float* columns, int* flags, cudaStream_t stream) {
  gather_columns<T><<<column_grid(q), tile_block(), 0, stream>>>(q, src.data(), strides3(src), columns, flags);
  LCSM_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void coefficient_spectrum(const ToeplitzParams& q, const ToeplitzPlan& plan, void* work, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((q.fft_length + 255) / 256), toeplitz_grid_limit(q.channels, 65535));
  gather_coefficients<T><<<grid, 256, 0, stream>>>(q, q.coefficient_columns, q.coefficient_flags);
  LCSM_CUDA_CHECK(cudaGetLastError());
  fft_plan(plan.length, q.channels, FftDirection::forward).execute(q.coefficient_columns, work, stream);
}

// The fused forward (toeplitz/fused.cuh): coefficient columns, sequence columns, rows, outputs,
// then the direct sums of flagged columns.
template <class T>
void run_fused_forward(const ToeplitzParams& q, const ToeplitzPlan& plan, const View<const T, 3>& x,
                       const View<T, 3>& y, cudaStream_t stream) {
  const FusedSplit split = fused_split(plan.length);
  allow_shared_memory<fused_columns<T, true>>(kFusedSmemBytes);  // 97 KB
  allow_shared_memory<fused_columns<T, false>>(kFusedSmemBytes);
  allow_shared_memory<fused_rows<>>(kFusedSmemBytes);
  allow_shared_memory<fused_outputs<T>>(kFusedSmemBytes);
  const std::int64_t pairs = (q.channels + 1) / 2;
  // Passes 1 and 3: the pair blocks fastest, so that the blocks that share x's and y's 32-byte
  // sectors (neighbouring channels of the same tokens) run side by side and meet in L2.
  const unsigned pair_blocks = toeplitz_grid_limit((pairs + split.pairs() - 1) / split.pairs(), 0x7FFFFFFF);
  const dim3 column_grid(pair_blocks, static_cast<unsigned>(split.n2() / split.width()), 1);
  const dim3 sequence_grid(pair_blocks, column_grid.y, toeplitz_grid_limit(q.sequences, 65535));
  auto* coefficient_columns = reinterpret_cast<float2*>(q.coefficient_columns);
  auto* columns = reinterpret_cast<float2*>(q.columns);
  clear_flags(q, plan, stream);
  fused_columns<T, true><<<column_grid, kFusedThreads, kFusedSmemBytes, stream>>>(
      q, split, static_cast<const T*>(q.coefficients), q.s_a, coefficient_columns, q.coefficient_flags);
  fused_columns<T, false><<<sequence_grid, kFusedThreads, kFusedSmemBytes, stream>>>(q, split, x.data(), strides3(x),
                                                                                     columns, q.column_flags);
  const unsigned unit_blocks = static_cast<unsigned>((split.n1() / 2 + 1 + split.units() - 1) / split.units());
  fused_rows<><<<dim3(unit_blocks, toeplitz_grid_limit(pairs, 65535)), kFusedThreads, kFusedSmemBytes, stream>>>(
      q, split, coefficient_columns, columns);
  fused_outputs<T><<<sequence_grid, kFusedThreads, kFusedSmemBytes, stream>>>(q, split, columns, y.data(), strides3(y),
                                                                              q.column_flags, q.coefficient_flags);
  toeplitz_direct_apply<T, false, true>
      <<<direct_grid(q, true), tile_block(), 0, stream>>>(q, q.column_flags, q.coefficient_flags);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void run_toeplitz_forward(ToeplitzParams q, const ToeplitzPlan& plan, const View<const T, 3>& x, const View<T, 3>& y,
                          const Device& device) {
  const cudaStream_t stream = device.stream;
  q.in = x.data(), q.s_in = strides3(x), q.out = y.data(), q.s_out = strides3(y);
  if (!plan.fft) {
    toeplitz_direct_apply<T, false, false><<<direct_grid(q, false), tile_block(), 0, stream>>>(q, nullptr, nullptr);
    LCSM_CUDA_CHECK(cudaGetLastError());
    return;
  }
  if (plan.fused) return run_fused_forward<T>(q, plan, x, y, stream);
  void* work = static_cast<unsigned char*>(device.workspace.data) + plan.off_work;
  clear_flags(q, plan, stream);
  coefficient_spectrum<T>(q, plan, work, stream);
  gather(q, x, q.columns, q.column_flags, stream);
  fft_columns(plan.length, q.channels, q.sequences, FftDirection::forward, q.columns, work, stream);
  multiply_spectra<><<<stride_grid(plan.columns * (plan.length / 2 + 1)), 256, 0, stream>>>(q, q.columns, false);
  LCSM_CUDA_CHECK(cudaGetLastError());
  fft_columns(plan.length, q.channels, q.sequences, FftDirection::inverse, q.columns, work, stream);
  scatter_columns<T><<<column_grid(q), tile_block(), 0, stream>>>(q, q.columns, y.data(), strides3(y), q.column_flags,
                                                                  q.coefficient_flags);
  toeplitz_direct_apply<T, false, true>
      <<<direct_grid(q, true), tile_block(), 0, stream>>>(q, q.column_flags, q.coefficient_flags);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void run_toeplitz_backward(ToeplitzParams q, const ToeplitzPlan& plan, const View<const T, 3>& x,
                           const View<const T, 3>& dy, const View<T, 3>& dx, const View<T, 2>& da,
                           const Device& device) {
  const cudaStream_t stream = device.stream;
  q.in = dy.data(), q.s_in = strides3(dy), q.in2 = x.data(), q.s_in2 = strides3(x);
  q.out = dx.data(), q.s_out = strides3(dx);
  if (!plan.fft) {
    if (plan.dx)
      toeplitz_direct_apply<T, true, false><<<direct_grid(q, false), tile_block(), 0, stream>>>(q, nullptr, nullptr);
    if (plan.da) {
      const dim3 grid(toeplitz_grid_limit((q.count + 31) / 32, 1 << 30),
                      toeplitz_grid_limit((q.channels + 31) / 32, 65535));
      toeplitz_direct_coefficient_grad<T><<<grid, tile_block(), 0, stream>>>(q, da.data(), strides3(da));
    }
    LCSM_CUDA_CHECK(cudaGetLastError());
    return;
  }
  void* work = static_cast<unsigned char*>(device.workspace.data) + plan.off_work;
  clear_flags(q, plan, stream);
  if (plan.dx) coefficient_spectrum<T>(q, plan, work, stream);
  gather(q, dy, q.columns, q.column_flags, stream);
  fft_columns(plan.length, q.channels, q.sequences, FftDirection::forward, q.columns, work, stream);
  if (plan.da) {
    gather(q, x, q.columns2, q.column_flags2, stream);
    fft_columns(plan.length, q.channels, q.sequences, FftDirection::forward, q.columns2, work, stream);
    sum_gradient_spectra<><<<stride_grid(q.channels * (plan.length / 2 + 1)), 256, 0, stream>>>(q);
    LCSM_CUDA_CHECK(cudaGetLastError());
    fft_plan(plan.length, q.channels, FftDirection::inverse).execute(q.columns2, work, stream);
    longest_sequence<><<<1, 256, 0, stream>>>(q);
    gradient_from_spectrum<><<<stride_grid(q.channels * q.count), 256, 0, stream>>>(q);
    toeplitz_fixup_coefficient_grad<T><<<toeplitz_grid_limit(q.channels, 65535), 256, 0, stream>>>(q);
    write_coefficient_grad<T><<<stride_grid(q.channels * q.count), 256, 0, stream>>>(q, da.data(), strides3(da));
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  if (plan.dx) {
    multiply_spectra<><<<stride_grid(plan.columns * (plan.length / 2 + 1)), 256, 0, stream>>>(q, q.columns, true);
    LCSM_CUDA_CHECK(cudaGetLastError());
    fft_columns(plan.length, q.channels, q.sequences, FftDirection::inverse, q.columns, work, stream);
    scatter_columns<T><<<column_grid(q), tile_block(), 0, stream>>>(q, q.columns, dx.data(), strides3(dx),
                                                                    q.column_flags, q.coefficient_flags);
    toeplitz_direct_apply<T, true, true>
        <<<direct_grid(q, true), tile_block(), 0, stream>>>(q, q.column_flags, q.coefficient_flags);
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
}

// da = 0 (a backward without tokens).
template <class T>
void zero_coefficient_grad(const View<T, 2>& da, cudaStream_t stream) {
  const std::int64_t total = da.size(0) * da.size(1);  // within da's checked memory
  fill_coefficient_grad<T><<<stride_grid(total), 256, 0, stream>>>(da.data(), strides3(da), da.size(0), da.size(1));
  LCSM_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void run_toeplitz_step(ToeplitzParams q, const View<const T, 3>& x_t, const View<T, 3>& y_t, const View<T, 3>& history,
                       std::int64_t position, cudaStream_t stream) {
  q.in = x_t.data(), q.s_in = strides3(x_t), q.out = y_t.data(), q.s_out = strides3(y_t);
  q.history = history.data(), q.s_history = strides3(history);
  q.position = position, q.tokens = x_t.size(1);
  const dim3 grid(toeplitz_grid_limit((q.channels + 31) / 32, 1 << 30), toeplitz_grid_limit(q.batch, 65535));
  toeplitz_step<T><<<grid, tile_block(), 0, stream>>>(q);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lcsm::cuda::detail
