// The chunked backward on the engine, for a decay per head (lightning), per token (scalar gate) or
// per token and key (vector gate): every gradient from three passes of the forward kernels and a
// few small kernels (chunked/backward_kernels.cuh); its plan and checks: chunked/backward_plan.cuh.
// Host code.
//
// With S_t the state after token t (S_{-1} the initial state), dS_t the loss's gradient with
// respect to it, g_t the log-decay of token t (lightning: g_h) and G_t = g_0 + ... + g_t:
//   dq_t = scale S_t dO_t: the forward of (q, k, v) := (dO, v, k) from S_{-1}^T (its state is S^T);
//   dS_t = e^{g_{t+1}} dS_{t+1} + scale q_t dO_t^T, from dS_final at each sequence's last token;
//   dv_t = dS_t^T k_t: the forward in reversed time of (k, q, dO) from dS_final / scale (its state
//          is dS / scale);
//   dk_t = dS_t v_t: the forward in reversed time of (v, dO, q) from (dS_final / scale)^T;
//   d initial state = e^{g_0} dS_0 = scale e^{g_0} (the dv pass's final state);
//   dG_t = q_t . dq_t - k_t . dk_t, plus <dS_final, S_T> at the last token, and the gradient of
//          g_t is the sum of dG over t and the tokens after it (lightning: summed over t too).
// The reversed passes view the tensors with a negative time stride, and a varlen row's sequences
// (and their states) last first. There token t decays by the gate of the token after it: the gate
// view is shifted by one and each sequence's first token has gate 0 (RecurrenceParams::
// gate_restart); lightning's reversed passes take its head decay as that gate (gate_from_head), or,
// with no dS_final (a zero start state, which the first token's decay cannot change), run the
// per-head decay itself (BackwardPlan::reversed_head).
// The vector gate decays each key row of S by its own gate: the dq and dk passes' states (S^T and
// dS^T) then decay along their value columns, the engine's value decay (chunked/value_gate_sm80.cuh),
// and the dv pass is a vector-gate forward; dG is per key (dg_t[c] = sum over i >= t of
// q_ic dq_ic - k_ic dk_ic, plus <dS_final[c, :], S_T[c, :]>).
// Each pass recomputes the states it needs (none is stored per chunk): the extra memory is the
// fp32 dq and dk that the decay gradient needs for 16-bit inputs (8 K bytes per token and head) and
// a few states per sequence.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lcsm/core/precision.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/cuda/chunked/backward_kernels.cuh"
#include "lcsm/cuda/chunked/backward_plan.cuh"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/error.cuh"

namespace lcsm::cuda::detail {

// Blocks for a grid-stride loop over `work` items, per_block items a block (at most 2^16 blocks).
inline unsigned grid_of(std::int64_t work, int per_block) {
  const std::int64_t blocks = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(std::min<std::int64_t>(std::max<std::int64_t>(blocks, 1), 1 << 16));
}

// d_log_decay = 0 (a call with no tokens and no state gradient).
inline void zero_head_gradient(const View<float, 1>& d_log_decay, cudaStream_t stream) {
  head_totals_kernel<><<<grid_of(d_log_decay.size(0), kBackwardThreads), kBackwardThreads, 0, stream>>>(
      nullptr, 0, static_cast<int>(d_log_decay.size(0)), 0, d_log_decay.data(), d_log_decay.stride(0));
  LCSM_CUDA_CHECK(cudaGetLastError());
}

// Views rows of `time` tokens backwards: token t becomes token time - 1 - t.
template <class E>
void reverse_time(const void*& data, Strides4& s, std::int64_t time) {
  if (time > 0) data = static_cast<const E*>(data) + (time - 1) * s.s1;
  s.s1 = -s.s1;
}
template <class E>
void reverse_time(void*& data, Strides4& s, std::int64_t time) {
  if (time > 0) data = static_cast<E*>(data) + (time - 1) * s.s1;
  s.s1 = -s.s1;
}
// States [N, ...] last first (the sequences of a reversed varlen row).
template <class P>
void reverse_sequences(P*& data, Strides4& s, std::int64_t count) {
  if (data && count > 0) data += (count - 1) * s.s0;
  s.s0 = -s.s0;
}

inline Strides4 contiguous_strides(std::int64_t d1, std::int64_t d2, std::int64_t d3) {
  return {d1 * d2 * d3, d2 * d3, d3, 1};
}

// The views of one checked backward call.
template <class T>
struct BackwardCall {
  View<const T, 4> q, k, v, d_o;
  View<T, 4> dq, dk, dv;
  StateGrads<float> states;
  CuSeqlens cu;
  double scale;
  Precision precision;
  ProblemShape shape;
};

// The call's decay into a pass's params: the head decays, or the gate (scalar or per key).
template <DecayKind kDecay>
void set_backward_decay(RecurrenceParams& p, const BackwardDecay& decay) {
  if (decay.log_decay) set_head_decay(p, *decay.log_decay);
  else if constexpr (kDecay == DecayKind::key) set_gate(p, decay.key_gate);
  else set_gate(p, decay.gate);
}

// A reversed pass's views (rows of `time` tokens; a varlen row's sequence order is the caller's):
// time backwards, and token t decays by the gate of token t + 1, with a restart at each sequence's
// first token (lightning: its head decay as that gate, or, with head_decay, the head decay itself:
// BackwardPlan::reversed_head). The outputs (and the row dots' operand and sums) are reversed as
// they are set in p, so set them first.
template <class T, DecayKind kDecay>
void reverse_pass(RecurrenceParams& p, const BackwardDecay& decay, std::int64_t time, bool head_decay) {
  reverse_time<T>(p.q, p.sq, time);
  reverse_time<T>(p.k, p.sk, time);
  reverse_time<T>(p.v, p.sv, time);
  if (p.out_float) reverse_time<float>(p.o, p.so, time);
  else reverse_time<T>(p.o, p.so, time);
  if (p.row_dots) {
    reverse_time<T>(p.dot_with, p.s_dot_with, time);
    void* dots = p.row_dots;
    reverse_time<float>(dots, p.s_row_dots, time);
    p.row_dots = static_cast<float*>(dots);
  }
  set_backward_decay<kDecay>(p, decay);
  if (head_decay) return;
  p.gate_restart = true;
  if (decay.log_decay) {
    p.gate_from_head = true;
  } else {
    p.log_gate += time * p.sg.s1;  // token t reads the gate of t + 1
    p.sg.s1 = -p.sg.s1;
  }
}

template <class T, DecayKind kDecay>
void run_backward(const BackwardCall<T>& c, const BackwardDecay& decay, const BackwardPlan& plan,
                  const Device& device) {
  const ProblemShape& s = c.shape;
  const std::int64_t N = s.sequences, time = s.time;
  const int H = static_cast<int>(s.heads), K = static_cast<int>(s.key_dim), V = static_cast<int>(s.value_dim);
  const ProblemShape swapped = swapped_dims(s);
  const cudaStream_t stream = device.stream;
  const bool varlen = c.cu.present(), gradient = decay.wants_gradient();

  char* next = static_cast<char*>(device.workspace.data);
  const auto take = [&](std::size_t bytes) -> void* {
    void* region = bytes ? next : nullptr;
    next += bytes;
    return region;
  };
  void* segments = take(plan.segments);
  auto* scaled_final = static_cast<float*>(take(plan.scaled_final));
  auto* final_state = static_cast<float*>(take(plan.final_state));
  auto* dq32 = static_cast<float*>(take(plan.dq32));
  auto* dk32 = static_cast<float*>(take(plan.dk32));
  auto* terms = static_cast<float*>(take(plan.terms));
  auto* totals = static_cast<double*>(take(plan.totals));
  auto* offsets = static_cast<std::int64_t*>(take(plan.offsets));
  void* zeros = take(plan.zeros);
  const Device pass_device{stream, {segments, plan.segments}, device.kernels};

  // scale = 0: dq = 0, and dS is the decayed dS_final alone (the passes run at scale 1 with a zero
  // operand in place of q).
  const bool zero_scale = c.scale == 0.0;
  const double pass_scale = zero_scale ? 1.0 : c.scale;
  if (zero_scale) LCSM_CUDA_CHECK(cudaMemsetAsync(zeros, 0, plan.zeros, stream));
  const View<const T, 4> q_or_zeros =
      zero_scale ? View<const T, 4>(static_cast<const T*>(zeros), c.q.shape(), {0, 0, 0, 0}) : c.q;
  using Passes = BackwardPasses<kDecay>;
  const auto set_decay = [&](RecurrenceParams& p) { set_backward_decay<kDecay>(p, decay); };

  // The forward-direction problem, for the small kernels (shapes, cu_seqlens, decays).
  RecurrenceParams fwd = make_params(c.q, c.k, c.v, c.dv, c.scale, s);
  fwd.cu_seqlens = varlen ? c.cu.data() : nullptr;
  fwd.cu_seqlens_int64 = c.cu.is_int64();
  set_decay(fwd);

  if (c.states.d_final.present()) {
    scaled_state_copy_kernel<><<<grid_of(N * H * K * V, kBackwardThreads), kBackwardThreads, 0, stream>>>(
        c.states.d_final.data(), strides_of(c.states.d_final), scaled_final, N, H, K, V,
        static_cast<float>(1.0 / pass_scale));
    LCSM_CUDA_CHECK(cudaGetLastError());
  }

  // The decay gradient's terms for 16-bit inputs: where both the dq and the dk pass run on the
  // sm_90a kernel, from their row dots (the passes write dq and dk in the input type; the dots go
  // where the fp32 copies would), else from fp32 copies of dq and dk.
  // (The sm_90a epilogue reads q and k as aligned pairs: unit-stride rows, even strides.)
  const int parts = row_dot_parts(K);
  const auto pairs = [](const View<const T, 4>& x) {
    const Strides4 w = strides_of(x);
    return w.s3 == 1 && w.s0 % 2 == 0 && w.s1 % 2 == 0 && w.s2 % 2 == 0 &&
           reinterpret_cast<std::uintptr_t>(x.data()) % 4 == 0;
  };
  float* dq_dots = nullptr;
  float* dk_dots = nullptr;
  if constexpr (row_dot_terms(kDecay)) {
    if (dq32 && pairs(c.q) && pairs(c.k) &&
        sm90_path<T, Passes::dq>(make_params(c.d_o, c.v, c.k, c.dq, c.scale, swapped), device.kernels) &&
        sm90_path<T, Passes::dk>(make_params(c.v, c.d_o, q_or_zeros, c.dk, pass_scale, swapped), device.kernels)) {
      dq_dots = dq32, dk_dots = dk32;
      dq32 = dk32 = nullptr;
    }
  }
  // A pass's row dots with `with` (forward orientation; the reversed pass flips them with its views).
  const auto set_row_dots = [&](RecurrenceParams& p, const View<const T, 4>& with, float* dots) {
    p.dot_with = with.data();
    p.s_dot_with = strides_of(with);
    p.row_dots = dots;
    p.s_row_dots = contiguous_strides(s.time, H, parts);
  };

  // dq: the forward of (dO, v, k) from S_{-1}^T; its final state S_T^T lands in [N, H, K, V].
  {
    RecurrenceParams p = make_params(c.d_o, c.v, c.k, c.dq, c.scale, swapped);
    if (dq32) {
      p.o = dq32;
      p.so = contiguous_strides(s.time, H, K);
      p.out_float = true;
    }
    if (dq_dots) set_row_dots(p, c.q, dq_dots);
    p.cu_seqlens = fwd.cu_seqlens;
    p.cu_seqlens_int64 = fwd.cu_seqlens_int64;
    if (c.states.initial.present()) {
      p.initial_state = c.states.initial.data();
      p.s_initial = strides_of(c.states.initial);
      std::swap(p.s_initial.s2, p.s_initial.s3);
    }
    if (final_state) {
      p.final_state = final_state;
      p.s_final = {static_cast<std::int64_t>(H) * K * V, static_cast<std::int64_t>(K) * V, 1, V};
    }
    set_decay(p);
    run_forward<T, Passes::dq>(p, plan.dq, pass_device, c.precision);
  }

  if (varlen) {
    reversed_offsets_kernel<><<<grid_of(N + 1, kBackwardThreads), kBackwardThreads, 0, stream>>>(fwd, offsets);
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  // The reversed passes' common part: time and sequences backwards, the shifted gates.
  const auto reverse = [&](RecurrenceParams& p) {
    reverse_pass<T, kDecay>(p, decay, time, plan.reversed_head);
    if (varlen) {
      p.cu_seqlens = offsets;
      p.cu_seqlens_int64 = true;
      reverse_sequences(p.initial_state, p.s_initial, N);
      reverse_sequences(p.final_state, p.s_final, N);
    }
  };
  const auto run_reversed = [&](auto pass_kind, const RecurrenceParams& p, const ChunkPlan& pass_plan,
                                ForwardPhase phase) {
    if constexpr (kDecay == DecayKind::head)
      if (plan.reversed_head) return run_forward<T, DecayKind::head>(p, pass_plan, pass_device, c.precision, phase);
    run_forward<T, decltype(pass_kind)::value>(p, pass_plan, pass_device, c.precision, phase);
  };

  // dv: the reversed forward of (k, q, dO) from dS_final / scale; it ends at dS_0 / scale.
  {
    RecurrenceParams p = make_params(c.k, q_or_zeros, c.d_o, c.dv, pass_scale, s);
    if (scaled_final) {
      p.initial_state = scaled_final;
      p.s_initial = contiguous_strides(H, K, V);
    }
    if (c.states.d_initial.present()) {
      p.final_state = c.states.d_initial.data();
      p.s_final = strides_of(c.states.d_initial);
    }
    reverse(p);
    run_reversed(std::integral_constant<DecayKind, Passes::dv>{}, p, plan.dv, ForwardPhase::all);
  }
  // dk: the reversed forward of (v, dO, q) from (dS_final / scale)^T. Its segments start from the
  // dv pass's scanned states, transposed (the same dS, gates and segments), so it runs only its
  // output launch (the vector gate's passes decay differently).
  const bool shared_states = kDecay != DecayKind::key && plan.dv.split && same_segments(plan.dv, plan.dk);
  {
    RecurrenceParams p = make_params(c.v, c.d_o, q_or_zeros, c.dk, pass_scale, swapped);
    if (dk32) {
      p.o = dk32;
      p.so = contiguous_strides(s.time, H, K);
      p.out_float = true;
    }
    if (dk_dots) set_row_dots(p, c.k, dk_dots);
    if (scaled_final) {
      p.initial_state = scaled_final;
      p.s_initial = {static_cast<std::int64_t>(H) * K * V, static_cast<std::int64_t>(K) * V, 1, V};
    }
    reverse(p);
    p.segment_states_transposed = shared_states;
    run_reversed(std::integral_constant<DecayKind, Passes::dk>{}, p, plan.dk,
                 shared_states ? ForwardPhase::outputs_from_scanned : ForwardPhase::all);
  }

  if (c.states.d_initial.present() && N * H > 0) {
    initial_gradient_kernel<><<<grid_size(N * H, "(sequence, head) pairs"), kBackwardThreads, 0, stream>>>(
        fwd, c.states.d_initial.data(), strides_of(c.states.d_initial), K, V, static_cast<float>(pass_scale),
        kDecay == DecayKind::key);
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  if (!gradient) return;

  // The decay gradient: dG per token, then suffix sums per sequence.
  GateTermArgs<T> a{};
  a.q = c.q.data();
  a.k = c.k.data();
  a.sq = strides_of(c.q);
  a.sk = strides_of(c.k);
  if constexpr (std::is_same_v<T, float>) {
    a.dq = c.dq.data();
    a.dk = c.dk.data();
    a.sdq = strides_of(c.dq);
    a.sdk = strides_of(c.dk);
  } else {
    a.dq = dq32;
    a.dk = dk32;
    a.sdq = a.sdk = contiguous_strides(s.time, H, K);
    a.dq_out = c.dq.data();
    a.dk_out = c.dk.data();
    a.sdq_out = strides_of(c.dq);
    a.sdk_out = strides_of(c.dk);
  }
  const float* d_final = c.states.d_final.present() ? c.states.d_final.data() : nullptr;
  const Strides4 sdf = strides_of(c.states.d_final);
  if constexpr (kDecay == DecayKind::key) {
    const int parts = time_slices(s), HK = H * K;
    auto* part_sums = reinterpret_cast<double*>(terms);  // this region holds doubles for the vector gate
    if (N * HK > 0) {
      const dim3 grid(grid_size(N * parts, "(sequence, slice) pairs"), (HK + kKeyGateColumns - 1) / kKeyGateColumns);
      key_gate_terms_kernel<T><<<grid, kKeyGateColumns, 0, stream>>>(fwd, a, decay.d_key_gate.data(),
                                                                     strides_of(decay.d_key_gate), parts, part_sums);
      LCSM_CUDA_CHECK(cudaGetLastError());
      key_gate_carry_kernel<>
          <<<grid_size((N * HK + kBackwardThreads - 1) / kBackwardThreads, "columns"), kBackwardThreads, 0, stream>>>(
              fwd, parts, part_sums, d_final, sdf, final_state);
      LCSM_CUDA_CHECK(cudaGetLastError());
      key_gate_suffix_kernel<><<<grid, kKeyGateColumns, 0, stream>>>(fwd, decay.d_key_gate.data(),
                                                                     strides_of(decay.d_key_gate), parts, part_sums);
      LCSM_CUDA_CHECK(cudaGetLastError());
    }
    return;
  }
  Strides4 st{};
  if (decay.d_gate.present()) {
    a.terms = decay.d_gate.data();
    st = strides_of(decay.d_gate);
  } else {
    a.terms = terms;
    st = contiguous_strides(s.time, H, 1);
  }
  a.st = st;
  const std::int64_t rows = s.batch * s.time * s.heads;
  if (rows > 0 && dq_dots) {
    row_dot_terms_kernel<>
        <<<grid_of(rows, kBackwardThreads), kBackwardThreads, 0, stream>>>(fwd, dq_dots, dk_dots, parts, a.terms, st);
    LCSM_CUDA_CHECK(cudaGetLastError());
  } else if (rows > 0) {
    gate_terms_kernel<T><<<grid_of(rows, kBackwardThreads / 32), kBackwardThreads, 0, stream>>>(fwd, a);
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  const int slices = time_slices(s);
  if (N * H > 0) {
    const unsigned blocks = grid_size(N * H * slices, "(sequence, head, slice) triples");
    if (decay.d_gate.present()) {
      gate_part_sums_kernel<false>
          <<<blocks, kBackwardThreads, 0, stream>>>(fwd, a.terms, st, d_final, sdf, final_state, K, V, slices, totals);
      LCSM_CUDA_CHECK(cudaGetLastError());
      gate_suffix_kernel<><<<blocks, kBackwardThreads, 0, stream>>>(fwd, a.terms, st, slices, totals);
    } else {
      gate_part_sums_kernel<true>
          <<<blocks, kBackwardThreads, 0, stream>>>(fwd, a.terms, st, d_final, sdf, final_state, K, V, slices, totals);
    }
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  if (decay.d_log_decay.present()) {
    head_totals_kernel<><<<grid_of(H, kBackwardThreads), kBackwardThreads, 0, stream>>>(
        totals, N, H, slices + 1, decay.d_log_decay.data(), decay.d_log_decay.stride(0));
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace lcsm::cuda::detail
