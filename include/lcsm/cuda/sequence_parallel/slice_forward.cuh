// One rank's forward under sequence parallelism (LASP-2 style), in two enqueued phases around the
// all-gather (docs/sequence-parallel.md):
//   deltas():  the engine's delta launch over every segment of this rank's slice (the last one
//              included, ForwardPhase::deltas), folded into the slice's state contribution from
//              zero (rank 0: from the initial state) and its total log2-decay (slice_fold_kernel),
//              behind a header, into this rank's send block;
//   outputs(): after the gather, the ranks before this one folded into its start state
//              (combine_kernel), then the scan and output launches from it (ForwardPhase::outputs).
// The segment deltas of the first phase are the ones the scan of the second uses: no pass runs
// twice (a sequence that is not cut costs one extra delta pass). The collective is the caller's
// (collective.cuh); nothing here synchronises the host. Host code.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "lcsm/core/precision.hpp"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/sequence_parallel/combine.cuh"

namespace lcsm::cuda::sequence_parallel::detail {

using lcsm::cuda::detail::ChunkPlan;
using lcsm::cuda::detail::DecayKind;
using lcsm::cuda::detail::ForwardPhase;
using lcsm::cuda::detail::RecurrenceParams;
using lcsm::cuda::detail::round_up_256;
using lcsm::detail::ProblemShape;

inline int log2_width(DecayKind d, std::int64_t key_dim, std::int64_t value_dim) {
  return static_cast<int>(d == DecayKind::key ? key_dim : d == DecayKind::value ? value_dim : 1);
}

inline BlockLayout block_layout(DecayKind d, const ProblemShape& s) {
  BlockLayout b{};
  b.state_elements = s.sequences * s.heads * s.key_dim * s.value_dim;
  b.log2_elements = s.sequences * s.heads * log2_width(d, s.key_dim, s.value_dim);
  b.delta_offset = 256;  // the header, padded
  b.log2_offset = b.delta_offset + round_up_256(static_cast<std::size_t>(b.state_elements) * sizeof(float));
  b.bytes = b.log2_offset + round_up_256(static_cast<std::size_t>(b.log2_elements) * sizeof(float));
  return b;
}

// The workspace of one rank, region by region (256-byte multiples).
struct SliceWorkspace {
  std::size_t engine = 0;     // the engine's plan (segment states, log-decays, offsets)
  std::size_t log_decay = 0;  // segment log-decays of sequences the plan does not cut (gates)
  std::size_t send = 0, recv = 0, start = 0;
  std::size_t bytes() const { return engine + log_decay + send + recv + start; }
};

inline SliceWorkspace slice_workspace(DecayKind d, const ProblemShape& s, const ChunkPlan& plan, int ranks) {
  SliceWorkspace w;
  w.engine = round_up_256(plan.workspace_bytes());
  if (!plan.split && d != DecayKind::head)
    w.log_decay = round_up_256(static_cast<std::size_t>(s.sequences * s.heads *
                                                        lcsm::cuda::detail::gate_width(d, static_cast<int>(s.key_dim),
                                                                                       static_cast<int>(s.value_dim))) *
                               sizeof(float));
  const BlockLayout b = block_layout(d, s);
  w.send = b.bytes;
  w.recv = b.bytes * static_cast<std::size_t>(ranks);
  w.start = round_up_256(static_cast<std::size_t>(b.state_elements) * sizeof(float));
  return w;
}

// The engine's regions as run_forward places them (it sets the same ones again), so that the fold
// sees them; sequences not cut keep their segment log-decays in `unsplit_log_decay`.
inline void bind_engine(RecurrenceParams& p, const ChunkPlan& plan, char* engine, float* unsplit_log_decay) {
  p.value_blocks = static_cast<int>(plan.value_blocks);
  p.segment_len = plan.segment_len;
  p.segments_per_seq = plan.segments_per_seq;
  p.max_items = plan.max_items;
  if (plan.split) {
    p.segment_states = reinterpret_cast<float*>(engine);
    p.segment_log_decay = plan.log_decay_bytes ? reinterpret_cast<float*>(engine + plan.states_bytes) : nullptr;
  } else {
    p.segment_states = nullptr;
    p.segment_log_decay = unsplit_log_decay;
  }
}

template <class T, DecayKind kDecay>
class SliceForward {
 public:
  // p: the call's params (views, decay, initial and final states; no cu_seqlens), checked by the
  // front-end; the workspace at least slice_workspace(...).bytes() bytes, 256-byte aligned.
  SliceForward(const RecurrenceParams& p, const ProblemShape& shape, const ChunkPlan& plan, const Device& device,
               Precision precision, int rank, int ranks)
      : p_(p), shape_(shape), plan_(plan), device_(device), precision_(precision), rank_(rank), ranks_(ranks) {
    space_ = slice_workspace(kDecay, shape, plan, ranks);
    layout_ = block_layout(kDecay, shape);
    char* next = static_cast<char*>(device.workspace.data);
    engine_ = next, next += space_.engine;
    log_decay_ = reinterpret_cast<float*>(next), next += space_.log_decay;
    send_ = reinterpret_cast<unsigned char*>(next), next += space_.send;
    recv_ = reinterpret_cast<unsigned char*>(next), next += space_.recv;
    start_ = reinterpret_cast<float*>(next);
    bind_engine(p_, plan, engine_, space_.log_decay ? log_decay_ : nullptr);
  }

  const void* send() const { return send_; }
  void* recv() const { return recv_; }
  std::size_t block_bytes() const { return layout_.bytes; }

  void deltas() {
    const cudaStream_t stream = device_.stream;
    RecurrenceParams d = p_;
    d.last_delta = reinterpret_cast<float*>(send_ + layout_.delta_offset);
    if (rank_ != 0) d.initial_state = nullptr;  // only the first slice starts from the initial state
    lcsm::cuda::detail::run_forward<T, kDecay>(d, plan_, engine_device(), precision_, ForwardPhase::deltas);
    const std::int64_t kv = static_cast<std::int64_t>(shape_.key_dim) * shape_.value_dim;
    const std::int64_t blocks = (kv + lcsm::cuda::detail::kScanThreads - 1) / lcsm::cuda::detail::kScanThreads *
                                shape_.heads * shape_.sequences;
    if (blocks > 0) {
      lcsm::cuda::detail::slice_fold_kernel<kDecay>
          <<<lcsm::cuda::detail::grid_size(blocks, "state elements"), lcsm::cuda::detail::kScanThreads, 0, stream>>>(
              d, reinterpret_cast<float*>(send_ + layout_.log2_offset));
      LCSM_CUDA_CHECK(cudaGetLastError());
    }
    write_header_kernel<><<<1, 32, 0, stream>>>(header(), reinterpret_cast<RankHeader*>(send_));
    LCSM_CUDA_CHECK(cudaGetLastError());
  }

  void outputs() {
    combine();
    RecurrenceParams o = p_;
    o.initial_state = start_;
    o.s_initial = {shape_.heads * shape_.key_dim * shape_.value_dim, shape_.key_dim * shape_.value_dim,
                   shape_.value_dim, 1};
    lcsm::cuda::detail::run_forward<T, kDecay>(o, plan_, engine_device(), precision_, ForwardPhase::outputs);
  }

  // After the gather: this rank's start state ([N, H, K, V] contiguous, in the workspace).
  const float* combine() {
    const cudaStream_t stream = device_.stream;
    if (layout_.state_elements > 0) {
      const unsigned blocks = lcsm::cuda::detail::grid_size(
          (layout_.state_elements + kCombineThreads - 1) / kCombineThreads, "state elements");
      combine_kernel<><<<blocks, kCombineThreads, 0, stream>>>(
          recv_, layout_, header(), log2_width(kDecay, shape_.key_dim, shape_.value_dim), kDecay == DecayKind::key,
          p_.initial_state, p_.s_initial, start_);
      LCSM_CUDA_CHECK(cudaGetLastError());
    }
    return start_;
  }
  const unsigned char* gathered() const { return recv_; }
  const BlockLayout& layout() const { return layout_; }
  RankHeader header() const {
    return {kHeaderMagic,
            static_cast<std::int32_t>(kDecay),
            static_cast<std::int32_t>(shape_.batch),
            static_cast<std::int32_t>(shape_.heads),
            static_cast<std::int32_t>(shape_.key_dim),
            static_cast<std::int32_t>(shape_.value_dim),
            rank_,
            ranks_};
  }

 private:
  Device engine_device() const { return Device{device_.stream, {engine_, space_.engine}, device_.kernels}; }

  RecurrenceParams p_;
  ProblemShape shape_;
  ChunkPlan plan_;
  Device device_;
  Precision precision_;
  int rank_, ranks_;
  SliceWorkspace space_;
  BlockLayout layout_;
  char* engine_ = nullptr;
  float* log_decay_ = nullptr;
  unsigned char* send_ = nullptr;
  unsigned char* recv_ = nullptr;
  float* start_ = nullptr;
};

}  // namespace lcsm::cuda::sequence_parallel::detail
