// Sequence parallelism's checks on one GPU (device code in sequence_parallel_checks.cu).
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/cuda_checks.hpp"

namespace lcsm::test {

struct SequenceParallelCase {
  LongFamily family;
  bool fp32;                         // inputs fp32 (else bf16)
  std::vector<std::int64_t> slices;  // tokens per rank, in order (ragged, zeros allowed)
  int gates;                         // 0 fla's, 1 strong (-20 every 8th token), 2 weak
  std::int64_t batch, heads, key_dim, value_dim;
  std::uint64_t seed;
  bool tamper_header = false;  // rank 1's block claims another head count
};

struct SequenceParallelResult {
  double output_rel_rms, final_rel_rms;  // against the single-GPU forward of the whole sequences
  bool all_outputs_nan;
};

// The case's R ranks run one after another on this GPU, the all-gather replaced by device copies.
SequenceParallelResult run_sequence_parallel(const SequenceParallelCase& c);

struct SequenceParallelBackwardResult {
  double dq_rel_rms, dk_rel_rms, dv_rel_rms, d_initial_rel_rms, d_decay_rel_rms;  // against one GPU
};

// The backward with a random final-state gradient, the initial state and the decay gradient: R host
// threads (one stream each) on this GPU over a stand-in collective.
SequenceParallelBackwardResult run_sequence_parallel_backward(const SequenceParallelCase& c);

}  // namespace lcsm::test
