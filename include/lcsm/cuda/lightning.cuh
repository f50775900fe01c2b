// Lightning attention on CUDA: forward (prefill) and decode step. Include from a .cu file.
//
//   lcsm::cuda::Device dev{stream, {workspace_ptr, workspace_bytes}};
//   lcsm::forward<__nv_bfloat16>(dev, op, q, k, v, o, {initial_state, final_state}, cu_seqlens);
//   lcsm::step<__nv_bfloat16>(dev, op, q1, k1, v1, o1, state);
//
// Views point to device memory. Everything is enqueued on dev.stream: no call synchronises, none
// allocates. Long sequences with few heads need scratch memory: lcsm::cuda::forward_workspace_bytes
// says how much (0 when none), and forward throws lcsm::Error when dev.workspace is smaller.
// cu_seqlens lives in device memory; its count is checked, its contents are not (that would need a
// synchronisation): offsets are clamped to [0, T], so bad ones give wrong results, never bad accesses.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/error.cuh"
#include "lcsm/cuda/lightning_kernels.cuh"
#include "lcsm/cuda/lightning_wgmma.cuh"
#include "lcsm/ops/lightning.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cuda {
namespace detail {

template <class T>
constexpr bool is_cuda_input_v =
    std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

inline int multiprocessor_count() {
  int device = 0, count = 0;
  LCSM_CUDA_CHECK(cudaGetDevice(&device));
  LCSM_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// How a forward call is cut into work: segment length along time and the scratch it needs.
struct LightningPlan {
  std::int64_t chunk, value_tile, value_blocks, segment_len, segments_per_seq, max_items;
  bool split;
  std::size_t states_bytes, offsets_bytes;
  std::size_t workspace_bytes() const { return states_bytes + offsets_bytes; }
};

// Each CTA (one per SM: 256 threads and most of the shared memory) walks a whole segment, so the
// grid should be one full wave. Sequences are cut only when (sequences x heads x value blocks)
// would leave more than half of the SMs idle; then into as many equal segments (whole chunks, at
// least 4 of them) as fit in one wave.
inline LightningPlan plan_lightning(std::int64_t time, std::int64_t heads, std::int64_t key_dim, std::int64_t value_dim,
                                    std::int64_t sequences, bool varlen, int sms) {
  LightningPlan p{};
  p.chunk = key_dim > 128 ? 32 : 64;
  p.value_tile = (value_dim <= 64 || key_dim > 128) ? 64 : 128;
  p.value_blocks = (value_dim + p.value_tile - 1) / p.value_tile;
  const std::int64_t base = std::max<std::int64_t>(1, sequences * heads * p.value_blocks);
  const std::int64_t mean_len = sequences > 0 ? (time + sequences - 1) / sequences : 0;
  const std::int64_t segments = std::max<std::int64_t>(1, sms / base);
  p.split = 2 * base <= sms && segments > 1 && mean_len >= 8 * p.chunk;
  if (!p.split) {
    p.segment_len = std::max<std::int64_t>(time, 1);
    p.segments_per_seq = 1;
    p.max_items = sequences;
    return p;
  }
  const std::int64_t per = (mean_len + segments - 1) / segments;
  p.segment_len = std::max<std::int64_t>(4 * p.chunk, (per + p.chunk - 1) / p.chunk * p.chunk);
  p.segments_per_seq = varlen ? 0 : std::max<std::int64_t>(1, (time + p.segment_len - 1) / p.segment_len);
  p.max_items = varlen ? sequences + (time + p.segment_len - 1) / p.segment_len : sequences * p.segments_per_seq;
  p.states_bytes = static_cast<std::size_t>(p.max_items * heads * key_dim * value_dim) * sizeof(float);
  p.states_bytes = (p.states_bytes + 255) / 256 * 256;
  p.offsets_bytes = varlen ? static_cast<std::size_t>(sequences + 1) * sizeof(std::int64_t) : 0;
  return p;
}

template <class V>
Strides4 strides_of(const V& v) {
  return {v.stride(0), v.stride(1), v.stride(2), v.stride(3)};
}

// Unit inner stride, other strides and the base address multiples of 16 bytes.
template <class T, class V>
bool rows_are_16_byte_aligned(const V& v) {
  if (v.numel() == 0) return true;
  constexpr std::int64_t per = 16 / sizeof(T);
  const bool inner = v.size(3) <= 1 || v.stride(3) == 1;
  return inner && reinterpret_cast<std::uintptr_t>(v.data()) % 16 == 0 && v.stride(0) % per == 0 &&
         v.stride(1) % per == 0 && v.stride(2) % per == 0;
}

template <class T, int KT, int VT, bool kExact, bool kDeltaOnly>
void launch_chunks(const LightningParams& p, std::int64_t items, cudaStream_t stream) {
  using Tr = LightningTraits<T, KT, VT, kExact>;
  auto kernel = lightning_chunks_kernel<T, KT, VT, kExact, kDeltaOnly>;
  static const bool configured = [&] {
    LCSM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
    return true;
  }();
  (void)configured;
  const std::int64_t blocks = items * p.heads * p.value_blocks;
  if (blocks == 0) return;
  if (blocks > 0x7FFFFFFF) throw Error("lcsm::forward(cuda, LightningAttention): too many work items for one grid");
  kernel<<<static_cast<unsigned>(blocks), Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

// The launches of one forward: for cut sequences the delta launch (launch(true_type)), the scan
// over segments, then the output launch (launch(false_type)) that every call has.
template <class Launch>
void run_segments(const LightningParams& p, const LightningPlan& plan, cudaStream_t stream, Launch&& launch) {
  if (plan.split) {
    if (p.cu_seqlens) {
      lightning_segment_offsets_kernel<><<<1, 1024, 0, stream>>>(p, const_cast<std::int64_t*>(p.segment_offsets));
      LCSM_CUDA_CHECK(cudaGetLastError());
    }
    launch(std::true_type{});
    const std::int64_t kv = static_cast<std::int64_t>(p.key_dim) * p.value_dim;
    const dim3 grid(static_cast<unsigned>((kv + 255) / 256), static_cast<unsigned>(p.heads),
                    static_cast<unsigned>(p.sequences));
    lightning_segment_scan_kernel<><<<grid, 256, 0, stream>>>(p);
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  launch(std::false_type{});
}

template <class T, int KT, int VT, bool kExact>
void run_lightning(const LightningParams& p, const LightningPlan& plan, cudaStream_t stream) {
  run_segments(p, plan, stream, [&](auto delta_only) {
    launch_chunks<T, KT, VT, kExact, decltype(delta_only)::value>(p, plan.max_items, stream);
  });
}

// Whether the current device runs the wgmma kernels: a compute capability 9.0 device (Hopper) and
// a binary built for sm_90a. A build without sm_90a (e.g. PTX only) compiles the kernel to a stub
// whose only mark is a little static shared memory; cudaFuncGetAttributes sees it without a
// launch or a synchronisation. Cached per device.
inline bool wgmma_kernels_available() {
  static int cached[64];  // 0 unknown, 1 yes, 2 no
  int device = 0;
  LCSM_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 64 && cached[device]) return cached[device] == 1;
  int major = 0, minor = 0;
  LCSM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  LCSM_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  bool ok = major == 9 && minor == 0;
  if (ok) {
    cudaFuncAttributes attr{};
    ok = cudaFuncGetAttributes(&attr, lightning_wgmma_kernel<false, false>) == cudaSuccess && attr.sharedSizeBytes == 0;
    (void)cudaGetLastError();  // a missing image is an answer here, not an error
  }
  if (device < 64) cached[device] = ok ? 1 : 2;
  return ok;
}

// The wgmma kernels take bf16 with K <= 128, and K, V multiples of 8 over 16-byte aligned rows.
template <class T>
bool wgmma_path(const LightningParams& p) {
  if constexpr (!std::is_same_v<T, __nv_bfloat16>) {
    return false;
  } else {
    return p.vectorized && p.key_dim <= 128 && p.key_dim % 8 == 0 && p.value_dim % 8 == 0 && wgmma_kernels_available();
  }
}

template <bool kExact, bool kDeltaOnly>
void launch_wgmma(const LightningParams& p, std::int64_t items, cudaStream_t stream) {
  auto kernel = lightning_wgmma_kernel<kExact, kDeltaOnly>;
  static const bool configured = [&] {
    LCSM_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, WgmmaTraits<kExact>::kSmemBytes));
    return true;
  }();
  (void)configured;
  const std::int64_t blocks = items * p.heads * p.value_blocks;
  if (blocks == 0) return;
  if (blocks > 0x7FFFFFFF) throw Error("lcsm::forward(cuda, LightningAttention): too many work items for one grid");
  kernel<<<static_cast<unsigned>(blocks), WgmmaTraits<kExact>::kThreads, WgmmaTraits<kExact>::kSmemBytes, stream>>>(p);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

template <bool kExact>
void run_lightning_wgmma(const LightningParams& p, const LightningPlan& plan, cudaStream_t stream) {
  run_segments(p, plan, stream,
               [&](auto delta_only) { launch_wgmma<kExact, decltype(delta_only)::value>(p, plan.max_items, stream); });
}

// Switch on the key tile, the value tile and the precision (FlashAttention-style dispatch).
template <class T>
void dispatch_lightning(const LightningParams& p, const LightningPlan& plan, bool exact, cudaStream_t stream) {
  auto by_precision = [&](auto kt, auto vt) {
    constexpr int KT = decltype(kt)::value, VT = decltype(vt)::value;
    if (exact) run_lightning<T, KT, VT, true>(p, plan, stream);
    else run_lightning<T, KT, VT, false>(p, plan, stream);
  };
  using I64 = std::integral_constant<int, 64>;
  using I128 = std::integral_constant<int, 128>;
  using I256 = std::integral_constant<int, 256>;
  if (p.key_dim <= 64) {
    if (plan.value_tile == 64) by_precision(I64{}, I64{});
    else by_precision(I64{}, I128{});
  } else if (p.key_dim <= 128) {
    if (plan.value_tile == 64) by_precision(I128{}, I64{});
    else by_precision(I128{}, I128{});
  } else {
    by_precision(I256{}, I64{});
  }
}

}  // namespace detail

// Scratch bytes a forward call with these shapes needs on the current device (0: none).
template <class T>
std::size_t forward_workspace_bytes(const LightningAttention& /*op*/, View<const T, 4> q, View<const T, 4> v,
                                    const CuSeqlens& cu_seqlens = {}) {
  const std::int64_t sequences = cu_seqlens.present() ? cu_seqlens.num_sequences() : q.size(0);
  return detail::plan_lightning(q.size(1), q.size(2), q.size(3), v.size(3), sequences, cu_seqlens.present(),
                                detail::multiprocessor_count())
      .workspace_bytes();
}

}  // namespace cuda

// Forward on the GPU: o = lightning(q, k, v). T is float, __half or __nv_bfloat16; states are fp32.
template <class T>
void forward(const cuda::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<float>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA lightning attention takes float, __half or __nv_bfloat16");
  const char* where = "lcsm::forward(cuda, LightningAttention)";
  // Shapes and memory as on every backend; cu_seqlens' contents stay on the device, unread.
  auto p = detail::check_forward(where, q, k, v, o, cu_seqlens.present() ? StateIO<float>{} : state, CuSeqlens{});
  if (cu_seqlens.present()) {
    detail::check_argument(cu_seqlens.count() >= 2 && cu_seqlens.data() != nullptr, where, "cu_seqlens",
                           "at least 2 offsets (N + 1 for N sequences) in device memory",
                           detail::concat(cu_seqlens.count(), " offsets at ", cu_seqlens.data()));
    detail::check_argument(cu_seqlens.stride() == 1, where, "cu_seqlens", "contiguous offsets",
                           detail::concat("stride ", cu_seqlens.stride()));
    detail::check_argument(p.batch == 1, where, "cu_seqlens", "a packed batch with B = 1",
                           detail::concat("B = ", p.batch));
    p.sequences = cu_seqlens.num_sequences();
    detail::check_state_in(where, "initial_state", state.initial, p);
    detail::check_state_out(where, "final_state", state.final, p);
    detail::check_state_alias(where, "final_state", state.final, "initial_state", state.initial);
    detail::check_disjoint(where, "final_state", state.final, "o", o);
  }
  op.check(where, p.heads);
  detail::check_argument(p.heads <= cuda::detail::kMaxHeads, where, "q",
                         detail::concat("H <= ", cuda::detail::kMaxHeads), detail::concat("H = ", p.heads));
  detail::check_argument(p.key_dim <= 256, where, "q", "K <= 256", detail::concat("K = ", p.key_dim));
  if (p.batch == 0 || p.sequences == 0) return;

  const auto plan = cuda::detail::plan_lightning(p.time, p.heads, p.key_dim, p.value_dim, p.sequences,
                                                 cu_seqlens.present(), cuda::detail::multiprocessor_count());
  const std::size_t need = plan.workspace_bytes();
  if (need > 0 && (device.workspace.bytes < need || device.workspace.data == nullptr))
    detail::throw_argument(where, "device.workspace",
                           detail::concat("at least ", need, " bytes (lcsm::cuda::forward_workspace_bytes)"),
                           detail::concat(device.workspace.bytes, " bytes at ", device.workspace.data));

  cuda::detail::LightningParams prm{};
  prm.q = q.data();
  prm.k = k.data();
  prm.v = v.data();
  prm.o = o.data();
  prm.sq = cuda::detail::strides_of(q);
  prm.sk = cuda::detail::strides_of(k);
  prm.sv = cuda::detail::strides_of(v);
  prm.so = cuda::detail::strides_of(o);
  prm.vectorized = cuda::detail::rows_are_16_byte_aligned<T>(q) && cuda::detail::rows_are_16_byte_aligned<T>(k) &&
                   cuda::detail::rows_are_16_byte_aligned<T>(v) && cuda::detail::rows_are_16_byte_aligned<T>(o);
  prm.batch = p.batch;
  prm.time = p.time;
  prm.heads = static_cast<int>(p.heads);
  prm.key_dim = static_cast<int>(p.key_dim);
  prm.value_dim = static_cast<int>(p.value_dim);
  prm.value_blocks = static_cast<int>(plan.value_blocks);
  prm.scale = static_cast<float>(op.scale_for(p.key_dim));
  for (index_t h = 0; h < p.heads; ++h) prm.log_decay[h] = op.log_decay[h];
  prm.cu_seqlens = cu_seqlens.present() ? cu_seqlens.data() : nullptr;
  prm.cu_seqlens_int64 = cu_seqlens.is_int64();
  prm.sequences = p.sequences;
  prm.segment_len = plan.segment_len;
  prm.segments_per_seq = plan.segments_per_seq;
  prm.max_items = plan.max_items;
  prm.initial_state = state.initial.present() ? state.initial.data() : nullptr;
  prm.s_initial = cuda::detail::strides_of(state.initial);
  prm.final_state = state.final.present() ? state.final.data() : nullptr;
  prm.s_final = cuda::detail::strides_of(state.final);
  // Hopper with bf16: the wgmma kernels, 128 value columns per CTA, one CTA per SM: the plan's
  // segments (and workspace) as they are. LCSM_CUDA_MMA_SYNC=1 in the
  // environment keeps the mma.sync kernels (for comparisons).
  static const bool force_mma_sync = [] {
    const char* e = std::getenv("LCSM_CUDA_MMA_SYNC");
    return e && e[0] == '1';
  }();
  const bool wgmma = !force_mma_sync && cuda::detail::wgmma_path<T>(prm);
  if (wgmma) prm.value_blocks = static_cast<int>((p.value_dim + 127) / 128);
  if (plan.split) {
    prm.segment_states = static_cast<float*>(device.workspace.data);
    if (cu_seqlens.present())
      prm.segment_offsets =
          reinterpret_cast<const std::int64_t*>(static_cast<char*>(device.workspace.data) + plan.states_bytes);
  }
  // In-place states (final == initial) are safe: unsplit, one CTA reads a sequence's initial state
  // before it writes its final state; split, only the scan launch reads initial states.
  const bool exact = op.precision == LightningAttention::Precision::exact;
  if (wgmma) {
    if (exact) cuda::detail::run_lightning_wgmma<true>(prm, plan, device.stream);
    else cuda::detail::run_lightning_wgmma<false>(prm, plan, device.stream);
  } else {
    cuda::detail::dispatch_lightning<T>(prm, plan, exact, device.stream);
  }
}

// Decode on the GPU: advances state [B, H, K, V] (fp32, in place) by the n tokens of q, k [B, n, H, K],
// v [B, n, H, V], writing o [B, n, H, V].
template <class T>
void step(const cuda::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<float, 4> state) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA lightning attention takes float, __half or __nv_bfloat16");
  const char* where = "lcsm::step(cuda, LightningAttention)";
  const auto p = detail::check_step(where, q, k, v, o, state);
  op.check(where, p.heads);
  detail::check_argument(p.heads <= cuda::detail::kMaxHeads, where, "q",
                         detail::concat("H <= ", cuda::detail::kMaxHeads), detail::concat("H = ", p.heads));
  detail::check_argument(p.value_dim <= 1024, where, "v", "V <= 1024", detail::concat("V = ", p.value_dim));
  detail::check_argument(p.key_dim <= 16384, where, "q", "K <= 16384", detail::concat("K = ", p.key_dim));
  if (p.batch == 0 || p.time == 0) return;
  cuda::detail::StepParams prm{};
  prm.q = q.data();
  prm.k = k.data();
  prm.v = v.data();
  prm.o = o.data();
  prm.sq = cuda::detail::strides_of(q);
  prm.sk = cuda::detail::strides_of(k);
  prm.sv = cuda::detail::strides_of(v);
  prm.so = cuda::detail::strides_of(o);
  prm.state = state.data();
  prm.ss = cuda::detail::strides_of(state);
  prm.state_vectorized = state.stride(3) == 1 && reinterpret_cast<std::uintptr_t>(state.data()) % 16 == 0 &&
                         state.stride(0) % 4 == 0 && state.stride(1) % 4 == 0 && state.stride(2) % 4 == 0;
  prm.batch = p.batch;
  prm.tokens = p.time;
  prm.heads = static_cast<int>(p.heads);
  prm.key_dim = static_cast<int>(p.key_dim);
  prm.value_dim = static_cast<int>(p.value_dim);
  prm.scale = static_cast<float>(op.scale_for(p.key_dim));
  for (index_t h = 0; h < p.heads; ++h) prm.decay[h] = static_cast<float>(std::exp(op.log_decay[h]));
  const std::int64_t blocks = p.batch * p.heads;
  if (blocks > 0x7FFFFFFF) throw Error("lcsm::step(cuda, LightningAttention): too many (sequence, head) pairs");
  // Staging of q, k, v and the output sums for a group of tokens: [G][2K + 2V] floats, G <= 8 and
  // at most 32 KB (V <= 1024 keeps G >= 1 inside 48 KB).
  const index_t per_token = (2 * p.key_dim + 2 * p.value_dim) * static_cast<index_t>(sizeof(float));
  prm.token_group = static_cast<int>(std::max<index_t>(1, std::min<index_t>({8, p.time, (32 << 10) / per_token})));
  const std::size_t smem = static_cast<std::size_t>(prm.token_group * per_token);
  if (smem > (48u << 10)) {
    LCSM_CUDA_CHECK(cudaFuncSetAttribute(cuda::detail::lightning_step_kernel<T>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  cuda::detail::lightning_step_kernel<T>
      <<<static_cast<unsigned>(blocks), cuda::detail::kStepThreads, smem, device.stream>>>(prm);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lcsm
