// The engine's host side as the family front-ends (lightning.cuh, gated.cuh) see it: the checks
// every CUDA call shares, the views filled once into the params, the plan and its workspace, and
// the forward and decode runs. Host code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lcsm/core/precision.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"
#include "lcsm/cuda/chunked/instances.cuh"
#include "lcsm/cuda/chunked/launch.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/plan.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/ops/problem.hpp"

namespace lcsm::cuda::detail {

using lcsm::detail::ProblemShape;

template <class V>
Strides4 strides_of(const V& v) {
  Strides4 s{0, 0, 0, 0};
  std::int64_t* out[] = {&s.s0, &s.s1, &s.s2, &s.s3};
  for (int d = 0; d < V::rank && d < 4; ++d) *out[d] = v.stride(d);
  return s;
}

// Unit inner stride, other strides and the base address multiples of 16 bytes.
template <class E, class V>
bool rows_are_16_byte_aligned(const V& v) {
  if (v.numel() == 0) return true;
  constexpr std::int64_t per = 16 / sizeof(E);
  bool ok = v.inner_contiguous() && reinterpret_cast<std::uintptr_t>(v.data()) % 16 == 0;
  for (int d = 0; d + 1 < V::rank; ++d) ok = ok && v.stride(d) % per == 0;
  return ok;
}

// The checks of every forward call: shapes, memory and the aliasing rule as on every backend
// (ops/problem.hpp, core/validate.hpp: `ops` holds the operator's own tensors), K <= 256. cu_seqlens
// lives in device memory: its count, stride and extent are checked and its contents are not (the
// kernels clamp every offset to [0, T]: bad offsets give wrong results, never bad accesses).
template <class T>
ProblemShape check_forward_call(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                                const View<const T, 4>& v, const View<T, 4>& o, const StateIO<float>& state,
                                const CuSeqlens& cu, const lcsm::detail::Operands& ops,
                                lcsm::detail::StateLayout layout = lcsm::detail::StateLayout::kv) {
  using namespace lcsm::detail;
  const ProblemShape p = check_forward(where, q, k, v, o, state, cu, ops, layout, OffsetsAt::device);
  if (cu.present())
    check_argument(cu.stride() == 1, where, "cu_seqlens", "contiguous offsets", concat("stride ", cu.stride()));
  check_argument(p.key_dim <= 256, where, "q", "K <= 256", concat("K = ", p.key_dim));
  return p;
}

// The step's limit: one token's q, k, v, output sums (and decays) staged in shared memory.
inline void check_step_dims(const char* where, const ProblemShape& p) {
  using namespace lcsm::detail;
  check_argument(p.value_dim <= 1024, where, "v", "V <= 1024", concat("V = ", p.value_dim));
  check_argument(p.key_dim <= 16384, where, "q", "K <= 16384", concat("K = ", p.key_dim));
}

// The views of a call, once, into the params that every kernel of the engine takes.
template <class T>
RecurrenceParams make_params(const View<const T, 4>& q, const View<const T, 4>& k, const View<const T, 4>& v,
                             const View<T, 4>& o, double scale, const ProblemShape& shape) {
  RecurrenceParams p{};
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.o = o.data();
  p.sq = strides_of(q);
  p.sk = strides_of(k);
  p.sv = strides_of(v);
  p.so = strides_of(o);
  p.vectorized = rows_are_16_byte_aligned<T>(q) && rows_are_16_byte_aligned<T>(k) && rows_are_16_byte_aligned<T>(v) &&
                 rows_are_16_byte_aligned<T>(o);
  p.batch = shape.batch;
  p.time = shape.time;
  p.heads = static_cast<int>(shape.heads);
  p.key_dim = static_cast<int>(shape.key_dim);
  p.value_dim = static_cast<int>(shape.value_dim);
  p.sequences = shape.sequences;
  p.scale = static_cast<float>(scale);
  return p;
}

inline void set_states(RecurrenceParams& p, const StateIO<float>& state, const CuSeqlens& cu) {
  p.cu_seqlens = cu.present() ? cu.data() : nullptr;
  p.cu_seqlens_int64 = cu.is_int64();
  p.initial_state = state.initial.present() ? state.initial.data() : nullptr;
  p.s_initial = strides_of(state.initial);
  p.final_state = state.final.present() ? state.final.data() : nullptr;
  p.s_final = strides_of(state.final);
}

inline void set_head_decay(RecurrenceParams& p, const std::vector<double>& log_decay) {
  for (std::size_t h = 0; h < log_decay.size() && h < static_cast<std::size_t>(kMaxHeads); ++h)
    p.log_decay[h] = log_decay[h];
}

template <int Rank>
void set_gate(RecurrenceParams& p, const View<const float, Rank>& gate) {
  p.log_gate = gate.data();
  p.sg = strides_of(gate);
  p.gate_vectorized = Rank == 4 && rows_are_16_byte_aligned<float>(gate);
}

template <DecayKind kDecay>
ChunkPlan plan_forward(const ProblemShape& s, bool varlen) {
  ChunkPlan plan = plan_chunks(
      tile_shape(kDecay, s.key_dim, s.value_dim), s.time, s.heads, s.key_dim, s.value_dim, s.sequences, varlen,
      gate_width(kDecay, static_cast<int>(s.key_dim), static_cast<int>(s.value_dim)), multiprocessor_count());
  if (kDecay == DecayKind::cosine && plan.split)  // states of 2K rows and V + 1 columns
    plan.states_bytes =
        round_up_256(static_cast<std::size_t>(plan.max_items * s.heads * 2 * s.key_dim * (s.value_dim + 1)) * 4);
  if (kDecay == DecayKind::key && s.key_dim == kKeyGateSm90Keys)  // whichever kernel the device runs
    plan.flags_bytes = round_up_256(static_cast<std::size_t>(plan.max_items * s.heads * plan.value_blocks) * 4);
  return plan;
}

// Scratch bytes of a forward with these shapes on the current device (0: none).
template <DecayKind kDecay>
std::size_t workspace_bytes(std::int64_t time, std::int64_t heads, std::int64_t key_dim, std::int64_t value_dim,
                            std::int64_t sequences, bool varlen) {
  const ProblemShape shape{1, time, heads, key_dim, value_dim, sequences};
  lcsm::detail::check_problem_size("lcsm::cuda::forward_workspace_bytes", varlen ? "cu_seqlens" : "q", shape);
  return plan_forward<kDecay>(shape, varlen).workspace_bytes();
}

inline void check_workspace(const char* where, const Device& device, const ChunkPlan& plan) {
  const std::size_t need = plan.workspace_bytes();
  if (need > 0 && (device.workspace.bytes < need || device.workspace.data == nullptr))
    lcsm::detail::throw_argument(
        where, "device.workspace",
        lcsm::detail::concat("at least ", need, " bytes (lcsm::cuda::forward_workspace_bytes)"),
        lcsm::detail::concat(device.workspace.bytes, " bytes at ", device.workspace.data));
}

// Plan -> launches: the plan's segments and workspace into the params, the kernel for the device
// and shapes, then the segment deltas, the scan and the outputs. In-place states (final ==
// initial) are safe: unsplit, one CTA reads a sequence's initial state before it writes its final
// state; split, only the scan launch reads initial states.
// The plan's segments and workspace into the params (run_forward does it; callers that launch
// the engine's other kernels between phases do it first).
inline void set_plan(RecurrenceParams& p, const ChunkPlan& plan, const Device& device) {
  p.value_blocks = static_cast<int>(plan.value_blocks);
  p.segment_len = plan.segment_len;
  p.segments_per_seq = plan.segments_per_seq;
  p.max_items = plan.max_items;
  if (plan.flags_bytes)
    p.fallback_flags = reinterpret_cast<int*>(static_cast<char*>(device.workspace.data) + plan.states_bytes +
                                              plan.log_decay_bytes + plan.offsets_bytes);
  if (plan.split) {
    auto* base = static_cast<char*>(device.workspace.data);
    p.segment_states = reinterpret_cast<float*>(base);
    p.segment_log_decay = plan.log_decay_bytes ? reinterpret_cast<float*>(base + plan.states_bytes) : nullptr;
    if (p.cu_seqlens)
      p.segment_offsets = reinterpret_cast<const std::int64_t*>(base + plan.states_bytes + plan.log_decay_bytes);
  }
}

template <class T, DecayKind kDecay>
void run_forward(RecurrenceParams p, const ChunkPlan& plan, const Device& device, Precision precision,
                 ForwardPhase phase) {
  set_plan(p, plan, device);
  const bool exact = precision == Precision::exact;
  if (sm90_path<T, kDecay>(p, device.kernels)) {
    if constexpr (std::is_same_v<T, __nv_bfloat16> && kDecay == DecayKind::key) {
      run_segments<kDecay>(p, plan, device.stream, phase, [&](auto delta_only) {
        constexpr bool kDelta = decltype(delta_only)::value;
        if (exact) launch_sm90<kDecay, true, kDelta>(p, plan.max_items, device.stream);
        else launch_sm90<kDecay, false, kDelta>(p, plan.max_items, device.stream);
        if constexpr (!kDelta) {
          if (exact) launch_key_gate_fallback<true>(p, plan.max_items, device.stream);
          else launch_key_gate_fallback<false>(p, plan.max_items, device.stream);
        }
      });
    } else if constexpr (std::is_same_v<T, __nv_bfloat16> && kDecay != DecayKind::value &&
                         kDecay != DecayKind::cosine) {
      run_segments<kDecay>(p, plan, device.stream, phase, [&](auto delta_only) {
        constexpr bool kDelta = decltype(delta_only)::value;
        if (!kDelta && p.row_dots) {  // the backward's dq and dk passes
          if (exact) launch_sm90<kDecay, true, false, true>(p, plan.max_items, device.stream);
          else launch_sm90<kDecay, false, false, true>(p, plan.max_items, device.stream);
        } else if (exact) {
          launch_sm90<kDecay, true, kDelta>(p, plan.max_items, device.stream);
        } else {
          launch_sm90<kDecay, false, kDelta>(p, plan.max_items, device.stream);
        }
      });
    }
  } else {
    dispatch_sm80<T, kDecay>(p, plan, exact, device.stream, phase);
  }
}
template <class T, DecayKind kDecay>
void run_forward(const RecurrenceParams& p, const ChunkPlan& plan, const Device& device, Precision precision) {
  run_forward<T, kDecay>(p, plan, device, precision, ForwardPhase::all);
}

// Decode: advances p.state [B, H, K, V] (fp32, in place) by the p.time tokens of the views.
template <class T, DecayKind kDecay>
void run_step(RecurrenceParams p, const View<float, 4>& state, cudaStream_t stream) {
  p.state = state.data();
  p.ss = strides_of(state);
  p.state_vectorized = rows_are_16_byte_aligned<float>(state);
  // Staging of q, k, v, the output sums (and decays) for a group of tokens: G <= 8 and at most
  // 32 KB (beyond one token, which check_step_dims keeps inside the shared memory).
  const std::int64_t per_token =
      step_floats_per_token(kDecay, p.key_dim, p.value_dim) * static_cast<std::int64_t>(sizeof(float));
  p.token_group =
      static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>({8, p.time, (32 << 10) / per_token})));
  launch_step<T, kDecay>(p, static_cast<std::size_t>(p.token_group * per_token), stream);
}

}  // namespace lcsm::cuda::detail

#ifdef LCSM_CUDA_EXTERN_INSTANCES  // compiled once elsewhere: see instances.cuh
LCSM_CUDA_INSTANCES_OF_DECAY(extern, head)
LCSM_CUDA_INSTANCES_OF_DECAY(extern, token)
LCSM_CUDA_INSTANCES_OF_DECAY(extern, key)
LCSM_CUDA_INSTANCES_OF_DECAY(extern, cosine)
LCSM_CUDA_FORWARD_INSTANCES_OF_DECAY(extern, value)
#endif
