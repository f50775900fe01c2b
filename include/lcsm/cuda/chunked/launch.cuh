// Kernel launches of the chunked engine: shared-memory limits set once per device and kernel, grid
// bounds checked, the sm_90a image detected, and the three launches of a cut sequence (segment
// deltas, scan, outputs) in order. Host code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "lcsm/core/error.hpp"
#include "lcsm/cuda/chunked/decode.cuh"
#include "lcsm/cuda/chunked/fwd_sm80.cuh"
#include "lcsm/cuda/chunked/fwd_sm90.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/plan.cuh"
#include "lcsm/cuda/chunked/scan.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/error.cuh"
#include "lcsm/cuda/shared_memory.cuh"

namespace lcsm::cuda::detail {

inline unsigned grid_size(std::int64_t blocks, const char* what) {
  if (blocks > 0x7FFFFFFF)
    throw Error(std::string("lcsm (cuda): too many ") + what + " for one grid: " + std::to_string(blocks) +
                " blocks (at most 2^31 - 1)");
  return static_cast<unsigned>(blocks);
}

template <class T, class Tr, bool kDeltaOnly>
void launch_sm80(const RecurrenceParams& p, std::int64_t items, cudaStream_t stream) {
  constexpr auto kernel = chunk_kernel_sm80<T, Tr, kDeltaOnly>;
  allow_shared_memory<kernel>(Tr::kSmemBytes);
  const std::int64_t blocks = items * p.heads * p.value_blocks;
  if (blocks == 0) return;
  kernel<<<grid_size(blocks, "work items"), Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

// Behind the vector gate's sm_90a output launch: the mma.sync kernel on the CTAs that launch flagged
// (their chunks left the separable range, key_gate_sm90.cuh); the same grid, the others return.
template <bool kExact>
void launch_key_gate_fallback(const RecurrenceParams& p, std::int64_t items, cudaStream_t stream) {
  using T = __nv_bfloat16;
  RecurrenceParams fallback = p;
  fallback.fallback_only = true;
  launch_sm80<T, Sm80Traits<T, kKeyGateSm90Keys, kKeyGateValueTile, kExact, DecayKind::key>, false>(fallback, items,
                                                                                                    stream);
}

template <DecayKind kDecay, bool kExact, bool kDeltaOnly, bool kRowDots = false>
void launch_sm90(const RecurrenceParams& p, std::int64_t items, cudaStream_t stream) {
  using Tr = Sm90Traits<kExact, kDecay, kDeltaOnly>;
  constexpr auto kernel = chunk_kernel_sm90<kDecay, kExact, kDeltaOnly, kRowDots>;
  allow_shared_memory<kernel>(Tr::kSmemBytes);
  const std::int64_t blocks = items * p.heads * p.value_blocks;
  if (blocks == 0) return;
  kernel<<<grid_size(blocks, "work items"), Tr::kThreads, Tr::kSmemBytes, stream>>>(p, make_tile_maps<Tr>(p));
  LCSM_CUDA_CHECK(cudaGetLastError());
}

// Which launches of a forward run: all of them; only the delta launch (sequence parallelism: for
// every segment, the last included, cut sequences or not; p.last_delta set); the rest (the scan
// and the output launch, after the deltas and their collective); or the output launch alone, from
// segment start states already scanned (the backward's dk pass: the dv pass's, transposed).
enum class ForwardPhase { all, deltas, outputs, outputs_from_scanned };

// The launches of one forward: for cut sequences the delta launch (launch(true_type)), the scan
// over segments, then the output launch (launch(false_type)) that every call has.
template <DecayKind kDecay, class Launch>
void run_segments(const RecurrenceParams& p, const ChunkPlan& plan, cudaStream_t stream, ForwardPhase phase,
                  Launch&& launch) {
  if (phase == ForwardPhase::deltas || (phase == ForwardPhase::all && plan.split)) {
    if (p.cu_seqlens && plan.split) {
      segment_offsets_kernel<><<<1, 1024, 0, stream>>>(p, const_cast<std::int64_t*>(p.segment_offsets));
      LCSM_CUDA_CHECK(cudaGetLastError());
    }
    launch(std::true_type{});
  }
  if (phase == ForwardPhase::deltas) return;
  // The scan, unless its states are there already; cosFormer's non-causal outputs read the whole
  // sums instead.
  if (plan.split && !p.bidirectional && phase != ForwardPhase::outputs_from_scanned) {
    const std::int64_t kv = static_cast<std::int64_t>(state_rows<kDecay>(p)) * state_cols<kDecay>(p);
    const std::int64_t blocks = (kv + kScanThreads - 1) / kScanThreads * p.heads * p.sequences;
    segment_scan_kernel<kDecay><<<grid_size(blocks, "state elements"), kScanThreads, 0, stream>>>(p);
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  launch(std::false_type{});
}

// Whether the current device runs the sm_90a kernels: a compute capability 9.0 device (Hopper) and
// a binary built for sm_90a. A build without sm_90a (e.g. PTX only) compiles the kernel to a stub
// whose only mark is a little static shared memory; cudaFuncGetAttributes sees it without a
// launch or a synchronisation. Cached per device.
template <DecayKind kDecay>
bool sm90_kernels_available() {
  static int cached[64];  // 0 unknown, 1 yes, 2 no
  const int device = current_device();
  if (device < 64 && cached[device]) return cached[device] == 1;
  int major = 0, minor = 0;
  LCSM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  LCSM_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  bool ok = major == 9 && minor == 0;
  if (ok) {
    cudaFuncAttributes attr{};
    ok = cudaFuncGetAttributes(&attr, chunk_kernel_sm90<kDecay, false, false>) == cudaSuccess &&
         attr.sharedSizeBytes == 0;
    (void)cudaGetLastError();  // a missing image is an answer here, not an error
  }
  if (device < 64) cached[device] = ok ? 1 : 2;
  return ok;
}

// The sm_90a kernels take bf16 with K <= 128, K and V multiples of 8 over 16-byte aligned rows,
// the per-head or scalar-gate decay (outputs bf16, or fp32 with unit-stride rows: out_float), or
// the vector gate with K = 128 in a forward call's own launches (its fallback flags in the
// workspace: not the backward's reversed or row-dot passes) over 16-byte aligned gate rows.
template <class T, DecayKind kDecay>
bool sm90_path(const RecurrenceParams& p, Kernels kernels) {
  if constexpr (!std::is_same_v<T, __nv_bfloat16> || kDecay == DecayKind::value || kDecay == DecayKind::cosine) {
    return false;
  } else {
    const bool common =
        kernels != Kernels::portable && p.vectorized && p.key_dim <= 128 && p.key_dim % 8 == 0 && p.value_dim % 8 == 0;
    if constexpr (kDecay == DecayKind::key)
      return common && p.key_dim == kKeyGateSm90Keys && kKeyGateValueTile == 128 && p.fallback_flags &&
             p.gate_vectorized && !p.gate_restart && !p.gate_from_head && !p.row_dots && !p.out_float &&
             sm90_kernels_available<kDecay>();
    else return common && sm90_kernels_available<kDecay>();
  }
}

template <class T, DecayKind kDecay, bool kExact, int KT, int VT>
void run_sm80(const RecurrenceParams& p, const ChunkPlan& plan, cudaStream_t stream, ForwardPhase phase) {
  using Tr = Sm80Traits<T, KT, VT, kExact, kDecay>;
  run_segments<kDecay>(p, plan, stream, phase, [&](auto delta_only) {
    launch_sm80<T, Tr, decltype(delta_only)::value>(p, plan.max_items, stream);
  });
}

// Switch on the key tile, the value tile and the precision (FlashAttention-style dispatch). The
// plan's tile (plan.cuh) fixes the chunk and value tile; the gates instantiate two key tiles only.
template <class T, DecayKind kDecay>
void dispatch_sm80(const RecurrenceParams& p, const ChunkPlan& plan, bool exact, cudaStream_t stream,
                   ForwardPhase phase) {
  auto by_precision = [&](auto kt, auto vt) {
    constexpr int KT = decltype(kt)::value, VT = decltype(vt)::value;
    if (exact) run_sm80<T, kDecay, true, KT, VT>(p, plan, stream, phase);
    else run_sm80<T, kDecay, false, KT, VT>(p, plan, stream, phase);
  };
  using I64 = std::integral_constant<int, 64>;
  using I128 = std::integral_constant<int, 128>;
  using I256 = std::integral_constant<int, 256>;
  if constexpr (kDecay == DecayKind::head) {
    if (p.key_dim <= 64) {
      if (plan.tile.value_tile == 64) by_precision(I64{}, I64{});
      else by_precision(I64{}, I128{});
    } else if (p.key_dim <= 128) {
      if (plan.tile.value_tile == 64) by_precision(I128{}, I64{});
      else by_precision(I128{}, I128{});
    } else {
      by_precision(I256{}, I64{});
    }
  } else if constexpr (kDecay == DecayKind::key) {
    if (p.key_dim <= 128) by_precision(I128{}, std::integral_constant<int, kKeyGateValueTile>{});
    else by_precision(I256{}, I64{});
  } else if constexpr (kDecay == DecayKind::value) {
    if (p.key_dim > 128) by_precision(I256{}, I64{});
    else if (plan.tile.value_tile == 64) by_precision(I128{}, I64{});
    else by_precision(I128{}, I128{});
  } else if constexpr (kDecay == DecayKind::cosine) {  // the state's 2K rows fix the key tile
    if (2 * p.key_dim > 128) {
      if (plan.tile.value_tile == 64) by_precision(I256{}, I64{});
      else by_precision(I256{}, I128{});
    } else if (plan.tile.value_tile == 64) by_precision(I128{}, I64{});
    else by_precision(I128{}, I128{});
  } else {
    if (p.key_dim <= 128) by_precision(I128{}, I128{});
    else by_precision(I256{}, I64{});
  }
}

template <class T, DecayKind kDecay>
void launch_step(const RecurrenceParams& p, std::size_t smem, cudaStream_t stream) {
  const std::int64_t blocks = p.batch * p.heads;
  if (blocks == 0) return;
  auto kernel = step_kernel<T, kDecay>;
  if (smem > (48u << 10))
    LCSM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid_size(blocks, "(sequence, head) pairs"), kStepThreads, smem, stream>>>(p);
  LCSM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lcsm::cuda::detail
