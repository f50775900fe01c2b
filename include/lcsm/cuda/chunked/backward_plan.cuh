// The chunked backward's plan (chunked/backward.cuh runs it): the three passes' decays and shapes,
// the scratch of a call region by region, the checks of a call and of its workspace. Host code.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/cuda/chunked/row_dots.cuh"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"

namespace lcsm::cuda::detail {

// The decay of a call (one of the two) and the gradient it wants (absent views: none).
struct BackwardDecay {
  const std::vector<double>* log_decay = nullptr;  // lightning: per head
  View<const float, 3> gate;                       // scalar gate: [B, T, H]
  View<const float, 4> key_gate;                   // vector gate: [B, T, H, K]
  View<float, 1> d_log_decay;                      // lightning's gradient, [H]
  View<float, 3> d_gate;                           // the scalar gate's, [B, T, H]
  View<float, 4> d_key_gate;                       // the vector gate's, [B, T, H, K]
  bool wants_gradient() const { return d_log_decay.present() || d_gate.present() || d_key_gate.present(); }
};

// The problem with K and V swapped: the passes whose queries are values (dq, dk).
inline ProblemShape swapped_dims(const ProblemShape& s) {
  return {s.batch, s.time, s.heads, s.value_dim, s.key_dim, s.sequences};
}

// The decays of the three passes: dq runs forward, dv and dk in reversed time (the scalar gate's
// decay kind with the gate shifted, for lightning too, unless BackwardPlan::reversed_head; the
// vector gate's dq and dk decay by value column).
template <DecayKind kDecay>
struct BackwardPasses {
  static constexpr DecayKind dq = kDecay == DecayKind::key ? DecayKind::value : kDecay;
  static constexpr DecayKind dv = kDecay == DecayKind::key ? DecayKind::key : DecayKind::token;
  static constexpr DecayKind dk = kDecay == DecayKind::key ? DecayKind::value : DecayKind::token;
};

// The scratch of a backward call, region by region (bytes, 256-byte multiples; 0: absent).
struct BackwardPlan {
  ChunkPlan dq, dv, dk;  // the three passes
  // Lightning's reversed passes on the per-head decay, where they start from zero (no dS_final):
  // the shifted gate differs from it only at a sequence's first token, which then decays nothing
  // but the zero start state; the per-head kind runs the exact mode's rotated three-stage loop on
  // sm_90a (the token kind has room for two stages), and its delta launch keeps no gate scans.
  bool reversed_head = false;
  std::size_t segments = 0;        // their segment scratch (shared: they run one after another)
  std::size_t scaled_final = 0;    // dS_final / scale [N, H, K, V]
  std::size_t final_state = 0;     // S_T [N, H, K, V] for the final-state term of the decay gradient
  std::size_t dq32 = 0, dk32 = 0;  // fp32 dq, dk [B, T, H, K] (16-bit inputs, decay gradient wanted),
                                   // or the passes' row dots [B, T, H, K / 16] (row_dots.cuh)
  std::size_t terms = 0;           // dG [B, T, H] (lightning; the scalar gate's go into d_log_gate), or
                                   // the vector gate's per-slice sums [N, parts, H, K] (double)
  std::size_t totals = 0;          // per (sequence, head) slices' sums of the decay gradient [N, H, slices + 1]
  std::size_t offsets = 0;         // the reversed row's cu_seqlens (varlen)
  std::size_t zeros = 0;           // a zero operand (scale = 0)
  std::size_t bytes() const {
    return segments + scaled_final + final_state + dq32 + dk32 + terms + totals + offsets + zeros;
  }
};

// Whether two passes cut their sequences into the same segments (their scanned states line up).
inline bool same_segments(const ChunkPlan& a, const ChunkPlan& b) {
  return a.split == b.split && a.segment_len == b.segment_len && a.segments_per_seq == b.segments_per_seq &&
         a.max_items == b.max_items && a.states_bytes == b.states_bytes && a.log_decay_bytes == b.log_decay_bytes &&
         a.offsets_bytes == b.offsets_bytes;
}

// Whether a backward of 16-bit inputs may take its per-token decay-gradient terms from the passes'
// row dots (chunked/row_dots.cuh; the vector gate's terms are per key).
constexpr bool row_dot_terms(DecayKind kind) { return kind != DecayKind::key; }

// The decay gradient's sums cut each sequence into this many slices of time (about 512 tokens of
// the mean sequence each, at most 64: enough blocks to fill the card at B x H = 16).
inline int time_slices(const ProblemShape& s) {
  const std::int64_t mean = s.sequences > 0 ? s.batch * s.time / s.sequences : 0;
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(64, mean / 512)));
}

template <DecayKind kDecay>
BackwardPlan plan_backward(const ProblemShape& s, bool varlen, bool d_final, bool decay_gradient, bool float_inputs,
                           bool zero_scale) {
  using Passes = BackwardPasses<kDecay>;
  const int sms = multiprocessor_count();
  const ProblemShape swapped = swapped_dims(s);
  auto plan = [&](DecayKind d, const ProblemShape& x) {
    return plan_chunks(tile_shape(d, x.key_dim, x.value_dim), x.time, x.heads, x.key_dim, x.value_dim, x.sequences,
                       varlen, gate_width(d, static_cast<int>(x.key_dim), static_cast<int>(x.value_dim)), sms);
  };
  BackwardPlan b;
  b.dq = plan(Passes::dq, swapped);
  b.reversed_head = kDecay == DecayKind::head && !d_final;
  b.dv = plan(b.reversed_head ? DecayKind::head : Passes::dv, s);
  b.dk = plan(b.reversed_head ? DecayKind::head : Passes::dk, swapped);
  b.segments = round_up_256(std::max({b.dq.workspace_bytes(), b.dv.workspace_bytes(), b.dk.workspace_bytes()}));
  const auto bytes = [](std::int64_t count, std::size_t size) {
    return round_up_256(static_cast<std::size_t>(count) * size);
  };
  const std::int64_t state = s.sequences * s.heads * s.key_dim * s.value_dim;
  b.scaled_final = d_final ? bytes(state, sizeof(float)) : 0;
  b.final_state = d_final && decay_gradient ? bytes(state, sizeof(float)) : 0;
  if (decay_gradient && !float_inputs) b.dq32 = b.dk32 = bytes(s.batch * s.time * s.heads * s.key_dim, sizeof(float));
  if (decay_gradient && kDecay == DecayKind::head) b.terms = bytes(s.batch * s.time * s.heads, sizeof(float));
  if (decay_gradient && kDecay != DecayKind::key)
    b.totals = bytes(s.sequences * s.heads * (time_slices(s) + 1), sizeof(double));
  if (decay_gradient && kDecay == DecayKind::key)  // the slices' sums, then carries
    b.terms = bytes(s.sequences * time_slices(s) * s.heads * s.key_dim, sizeof(double));
  b.offsets = varlen ? bytes(s.sequences + 1, sizeof(std::int64_t)) : 0;
  b.zeros = zero_scale ? 256 : 0;
  return b;
}

// The checks of every backward call (as check_forward_call): shapes, memory, aliasing; K and V <= 256
// (the passes swap them).
template <class T>
ProblemShape check_backward_call(const char* where, const View<const T, 4>& q, const View<const T, 4>& k,
                                 const View<const T, 4>& v, const View<const T, 4>& d_o, const View<T, 4>& dq,
                                 const View<T, 4>& dk, const View<T, 4>& dv, const StateGrads<float>& states,
                                 const CuSeqlens& cu, const lcsm::detail::Operands& ops) {
  using namespace lcsm::detail;
  const ProblemShape p =
      check_backward(where, q, k, v, d_o, dq, dk, dv, states, cu, ops, StateLayout::kv, OffsetsAt::device);
  if (cu.present())
    check_argument(cu.stride() == 1, where, "cu_seqlens", "contiguous offsets", concat("stride ", cu.stride()));
  check_argument(p.key_dim <= 256, where, "q", "K <= 256", concat("K = ", p.key_dim));
  check_argument(p.value_dim <= 256, where, "v", "V <= 256 (the backward)", concat("V = ", p.value_dim));
  return p;
}

// Scratch bytes of a backward call with these shapes on the current device.
template <DecayKind kDecay, class T>
std::size_t backward_workspace_bytes(const char* where, const View<const T, 4>& q, const View<const T, 4>& v,
                                     const StateGrads<float>& states, bool decay_gradient, const CuSeqlens& cu,
                                     double scale) {
  const ProblemShape shape{q.size(0), q.size(1), q.size(2),
                           q.size(3), v.size(3), cu.present() ? cu.num_sequences() : q.size(0)};
  lcsm::detail::check_problem_size(where, cu.present() ? "cu_seqlens" : "q", shape);
  return plan_backward<kDecay>(shape, cu.present(), states.d_final.present(), decay_gradient, std::is_same_v<T, float>,
                               scale == 0.0)
      .bytes();
}

// The backward's workspace checks, for any plan with bytes() (BackwardPlan, CosineBackwardPlan).
template <class Plan>
void check_backward_workspace(const char* where, const Device& device, const Plan& plan) {
  using namespace lcsm::detail;
  const Workspace& w = device.workspace;
  if (plan.bytes() > 0 && (w.bytes < plan.bytes() || w.data == nullptr))
    throw_argument(where, "device.workspace",
                   concat("at least ", plan.bytes(), " bytes (lcsm::cuda::backward_workspace_bytes)"),
                   concat(w.bytes, " bytes at ", w.data));
  check_argument(reinterpret_cast<std::uintptr_t>(w.data) % 256 == 0, where, "device.workspace",
                 "a 256-byte aligned address", concat(w.data));
}

}  // namespace lcsm::cuda::detail
