// One rank's backward under sequence parallelism: the single-GPU backward of its slice
// (chunked/backward.cuh) from the two states it cannot see, each from one all-gather:
//   the state at its start   the forward's (SliceForward: deltas, gather, combine);
//   dS at its end            the ranks after it: each rank's state gradient at its start from its
//                            own tokens, C_q (the dv pass's delta phase in reversed time, folded,
//                            times scale e^{g_first}; the last rank's from dS_final), gathered, and
//                            folded back with the forward's slice decays (combine_reverse_kernel).
// With those, every gradient of the slice's tokens is the single-GPU backward's, the decay gradient
// included (<dS_end, S_end> is the gradient of the next slice's first gate: the identity the
// single-GPU decay gradient rests on). Lightning's d_log_decay sums every rank's share: a third
// gather of H floats, summed in rank order. Host code.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "lcsm/cuda/chunked/backward.cuh"
#include "lcsm/cuda/sequence_parallel/collective.cuh"
#include "lcsm/cuda/sequence_parallel/slice_forward.cuh"

namespace lcsm::cuda::sequence_parallel::detail {

using lcsm::cuda::detail::BackwardCall;
using lcsm::cuda::detail::BackwardDecay;
using lcsm::cuda::detail::BackwardPasses;
using lcsm::cuda::detail::BackwardPlan;
using lcsm::cuda::detail::Strides4;

// The backward's workspace beyond the forward slice's, region by region (256-byte multiples).
struct SliceBackwardWorkspace {
  SliceWorkspace forward;
  std::size_t send = 0, recv = 0;            // C_q blocks (the forward's block layout)
  std::size_t scaled_final = 0;              // dS_final / scale (last rank)
  std::size_t d_end = 0;                     // dS at the slice's end
  std::size_t dv_log_decay = 0;              // the dv pass's segment log-decays when its plan does not cut
  std::size_t sums_send = 0, sums_recv = 0;  // lightning's d_log_decay shares
  std::size_t backward = 0;                  // the single-GPU backward's own (its first region also serves
                                             // the dv pass's delta phase)
  std::size_t bytes() const {
    return forward.bytes() + send + recv + scaled_final + d_end + dv_log_decay + sums_send + sums_recv + backward;
  }
};

inline std::size_t sums_block_bytes(std::int64_t heads) {
  return round_up_256(static_cast<std::size_t>(heads) * sizeof(float));
}

template <DecayKind kDecay>
SliceBackwardWorkspace slice_backward_workspace(const ProblemShape& s, int ranks, bool decay_gradient,
                                                bool float_inputs, BackwardPlan* plan_out = nullptr) {
  SliceBackwardWorkspace w;
  w.forward = slice_workspace(kDecay, s, lcsm::cuda::detail::plan_forward<kDecay>(s, false), ranks);
  const BlockLayout b = block_layout(kDecay, s);
  w.send = b.bytes;
  w.recv = b.bytes * static_cast<std::size_t>(ranks);
  const std::size_t state = round_up_256(static_cast<std::size_t>(b.state_elements) * sizeof(float));
  w.scaled_final = state;
  w.d_end = state;
  w.dv_log_decay = round_up_256(
      static_cast<std::size_t>(s.sequences * s.heads * (kDecay == DecayKind::key ? s.key_dim : 1)) * sizeof(float));
  if (kDecay == DecayKind::head && decay_gradient) {
    w.sums_send = sums_block_bytes(s.heads);
    w.sums_recv = w.sums_send * static_cast<std::size_t>(ranks);
  }
  const BackwardPlan plan =
      lcsm::cuda::detail::plan_backward<kDecay>(s, false, true, decay_gradient, float_inputs, false);
  w.backward = round_up_256(plan.bytes());
  if (plan_out) *plan_out = plan;
  return w;
}

// What a rank's backward call holds (checked by the front-end).
template <class T>
struct SliceBackwardCall {
  View<const T, 4> q, k, v, d_o;
  View<T, 4> dq, dk, dv;
  StateGrads<float> states;  // initial: rank 0's; d_final: the last rank's; d_initial: every rank's
  double scale;
  Precision precision;
  ProblemShape shape;
};

template <class T, DecayKind kDecay>
void slice_backward(const SliceBackwardCall<T>& c, BackwardDecay decay, const View<float, 1>& d_log_decay,
                    const Device& device, Collective& comm) {
  using Passes = BackwardPasses<kDecay>;
  const ProblemShape& s = c.shape;
  const int rank = comm.rank(), ranks = comm.size();
  const cudaStream_t stream = device.stream;
  const std::int64_t N = s.sequences;
  const int H = static_cast<int>(s.heads), K = static_cast<int>(s.key_dim), V = static_cast<int>(s.value_dim);
  const bool decay_gradient = decay.wants_gradient() || d_log_decay.present();
  BackwardPlan plan_b;
  const SliceBackwardWorkspace w =
      slice_backward_workspace<kDecay>(s, ranks, decay_gradient, std::is_same_v<T, float>, &plan_b);

  char* next = static_cast<char*>(device.workspace.data);
  const auto take = [&](std::size_t bytes) {
    char* region = next;
    next += bytes;
    return region;
  };
  char* forward_space = take(w.forward.bytes());
  auto* send = reinterpret_cast<unsigned char*>(take(w.send));
  auto* recv = reinterpret_cast<unsigned char*>(take(w.recv));
  auto* scaled_final = reinterpret_cast<float*>(take(w.scaled_final));
  auto* d_end = reinterpret_cast<float*>(take(w.d_end));
  auto* dv_log_decay = reinterpret_cast<float*>(take(w.dv_log_decay));
  auto* sums_send = reinterpret_cast<unsigned char*>(take(w.sums_send));
  auto* sums_recv = reinterpret_cast<unsigned char*>(take(w.sums_recv));
  char* backward_space = take(w.backward);
  const Strides4 contiguous{static_cast<std::int64_t>(H) * K * V, static_cast<std::int64_t>(K) * V, V, 1};

  // 1. The state at the slice's start: the forward's deltas, gather, combine (o is never written).
  RecurrenceParams fwd = lcsm::cuda::detail::make_params(c.q, c.k, c.v, c.dv, c.scale, s);
  StateIO<float> forward_states;
  forward_states.initial = c.states.initial;
  lcsm::cuda::detail::set_states(fwd, forward_states, CuSeqlens{});
  lcsm::cuda::detail::set_backward_decay<kDecay>(fwd, decay);
  const ChunkPlan plan_f = lcsm::cuda::detail::plan_forward<kDecay>(s, false);
  SliceForward<T, kDecay> slice(fwd, s, plan_f, Device{stream, {forward_space, w.forward.bytes()}, device.kernels},
                                c.precision, rank, ranks);
  slice.deltas();
  comm.all_gather(slice.send(), slice.recv(), slice.block_bytes(), stream);
  const float* start = slice.combine();
  const BlockLayout layout = slice.layout();

  // 2. C_q: the dv pass's delta phase in reversed time from zero (the last rank: from
  //    dS_final / scale), folded, times scale e^{g_first}.
  const bool last = rank == ranks - 1;
  const bool has_final = last && c.states.d_final.present();
  const std::int64_t state_elements = layout.state_elements;
  if (has_final && state_elements > 0) {
    lcsm::cuda::detail::scaled_state_copy_kernel<>
        <<<lcsm::cuda::detail::grid_of(state_elements, lcsm::cuda::detail::kBackwardThreads),
           lcsm::cuda::detail::kBackwardThreads, 0, stream>>>(
            c.states.d_final.data(), lcsm::cuda::detail::strides_of(c.states.d_final), scaled_final, N, H, K, V,
            static_cast<float>(1.0 / c.scale));
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  {
    RecurrenceParams p = lcsm::cuda::detail::make_params(c.k, c.q, c.d_o, c.dv, c.scale, s);
    if (has_final) {
      p.initial_state = scaled_final;
      p.s_initial = contiguous;
    }
    lcsm::cuda::detail::reverse_pass<T, kDecay>(p, decay, s.time, plan_b.reversed_head);
    const ChunkPlan plan_dv = plan_b.dv;
    bind_engine(p, plan_dv, backward_space, dv_log_decay);
    p.last_delta = reinterpret_cast<float*>(send + layout.delta_offset);
    lcsm::cuda::detail::run_forward<T, Passes::dv>(
        p, plan_dv, Device{stream, {backward_space, w.backward}, device.kernels}, c.precision, ForwardPhase::deltas);
    const std::int64_t kv = static_cast<std::int64_t>(K) * V;
    const std::int64_t blocks = (kv + lcsm::cuda::detail::kScanThreads - 1) / lcsm::cuda::detail::kScanThreads * H * N;
    if (blocks > 0) {
      // The reversed slice's own log-decays land in the unused log2 part of the send block.
      lcsm::cuda::detail::slice_fold_kernel<Passes::dv>
          <<<lcsm::cuda::detail::grid_size(blocks, "state elements"), lcsm::cuda::detail::kScanThreads, 0, stream>>>(
              p, reinterpret_cast<float*>(send + layout.log2_offset));
      LCSM_CUDA_CHECK(cudaGetLastError());
    }
    if (N * H > 0) {
      lcsm::cuda::detail::initial_gradient_kernel<>
          <<<lcsm::cuda::detail::grid_size(N * H, "(sequence, head) pairs"), lcsm::cuda::detail::kBackwardThreads, 0,
             stream>>>(fwd, p.last_delta, contiguous, K, V, static_cast<float>(c.scale), kDecay == DecayKind::key);
      LCSM_CUDA_CHECK(cudaGetLastError());
    }
    write_header_kernel<><<<1, 32, 0, stream>>>(slice.header(), reinterpret_cast<RankHeader*>(send));
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
  comm.all_gather(send, recv, layout.bytes, stream);
  if (state_elements > 0) {
    combine_reverse_kernel<>
        <<<lcsm::cuda::detail::grid_size((state_elements + kCombineThreads - 1) / kCombineThreads, "state elements"),
           kCombineThreads, 0, stream>>>(slice.gathered(), recv, layout, slice.header(),
                                         log2_width(kDecay, s.key_dim, s.value_dim), kDecay == DecayKind::key, d_end);
    LCSM_CUDA_CHECK(cudaGetLastError());
  }

  // 3. The slice's backward from its start state and its end's state gradient.
  const std::int64_t h64 = H, k64 = K, v64 = V;
  const View<const float, 4> start_view = lcsm::view(start, {N, h64, k64, v64});  // [N, H, K, V] contiguous
  const View<const float, 4> end_view =
      last ? c.states.d_final : lcsm::view(static_cast<const float*>(d_end), {N, h64, k64, v64});
  if (d_log_decay.present()) decay.d_log_decay = lcsm::view(reinterpret_cast<float*>(sums_send), {s.heads});
  const BackwardPlan plan_local = lcsm::cuda::detail::plan_backward<kDecay>(
      s, false, end_view.present(), decay.wants_gradient(), std::is_same_v<T, float>, false);
  lcsm::cuda::detail::run_backward<T, kDecay>(
      BackwardCall<T>{c.q, c.k, c.v, c.d_o, c.dq, c.dk, c.dv,
                      StateGrads<float>{start_view, end_view, c.states.d_initial}, CuSeqlens{}, c.scale, c.precision,
                      s},
      decay, plan_local, Device{stream, {backward_space, w.backward}, device.kernels});

  // 4. Lightning's d_log_decay: every rank's share, summed in rank order.
  if (d_log_decay.present()) {
    comm.all_gather(sums_send, sums_recv, w.sums_send, stream);
    sum_ranks_kernel<><<<(H + 127) / 128, 128, 0, stream>>>(sums_recv, w.sums_send, 0, ranks, H, d_log_decay.data(),
                                                            d_log_decay.stride(0));
    LCSM_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace lcsm::cuda::sequence_parallel::detail
