// The arguments of every kernel of the chunked engine (forward, segment scan, decode), passed by
// value (FlashAttention-2 style) and filled once per call by make_params (chunked/run.cuh).
#pragma once

#include <cstdint>

namespace lcsm::cuda::detail {

constexpr int kMaxHeads = 256;  // per-head log-decays travel inside the parameter block

// Element strides of a rank-4 view (rank-3 gates use the first three).
struct Strides4 {
  std::int64_t s0, s1, s2, s3;
};

struct RecurrenceParams {
  // q, k [B, T, H, K]; v, o [B, T, H, V] (element type fixed by the kernel's template).
  const void* q;
  const void* k;
  const void* v;
  void* o;
  Strides4 sq, sk, sv, so;
  bool vectorized;  // every row of q, k, v, o is unit-stride and 16-byte aligned
  bool out_float;   // o holds fp32 whatever the input type (the backward's dq and dk before dg)
  // The backward's row dots (chunked/row_dots.cuh): each output row times the same row of
  // dot_with [B, T, H, V] (bf16, unit-stride rows, even strides, 4-byte aligned: the host checks),
  // summed per 16 columns into row_dots [B, T, H, parts] (fp32); null: none.
  const void* dot_with;
  Strides4 s_dot_with;
  float* row_dots;
  Strides4 s_row_dots;

  std::int64_t batch, time;
  int heads, key_dim, value_dim, value_blocks;
  float scale;

  // The decay, as the kernel's decay policy reads it (chunked/decay_*.cuh): per-head log-decays
  // (lightning), or the fp32 log-gate [B, T, H] (scalar gate) / [B, T, H, K] (vector gate).
  double log_decay[kMaxHeads];
  const float* log_gate;
  Strides4 sg;
  bool gate_vectorized;  // vector gate rows unit-stride and 16-byte aligned
  // The backward's passes in reversed time (chunked/backward.cuh) read the token decay shifted by
  // one: each sequence's first token has log-gate 0 (gate_restart), and lightning's passes take the
  // head's log-decay for every other token (gate_from_head) instead of a gate tensor.
  bool gate_restart;
  bool gate_from_head;

  // cosFormer (DecayKind::cosine, chunked/cosine_sm80.cuh). The engine's state is then [2K, V + 1]:
  // key_dim and value_dim stay q's K and v's V, the state's rows and columns are 2K and V + 1.
  const std::int64_t* positions;  // [N] (device) first position of each sequence; null: 0
  std::int64_t cos_length;        // M when > 0; else each sequence's first position + its length
  float eps;                      // the denominator's clamp
  bool relu;                      // phi = ReLU, else 1 + ELU
  bool bidirectional;             // non-causal: every token reads the whole sequence's state (last_delta)
  bool cos_numerator;             // o is the numerator, not divided by the denominator (the backward's)

  // Sequences: B rows of T tokens, or cu_seqlens over row 0 (device memory, int32 or int64).
  const void* cu_seqlens;
  bool cu_seqlens_int64;
  std::int64_t sequences;

  // Sequence segments (the unit of parallel work along time): segment_len tokens each, a multiple
  // of the chunk. Without varlen every sequence has segments_per_seq of them; with varlen,
  // segment_offsets[n] (device, N + 1 entries) is the first segment of sequence n.
  std::int64_t segment_len;
  std::int64_t segments_per_seq;
  const std::int64_t* segment_offsets;
  std::int64_t max_items;  // grid bound on segments (an upper bound with varlen)

  // States [N, H, K, V] in fp32; absent when null.
  const float* initial_state;
  Strides4 s_initial;
  float* final_state;
  Strides4 s_final;

  // Workspace: segment contributions, then segment start states [max_items, H, K, V]; each
  // segment's total log-decay [max_items, H, gate width] (per-token gates only).
  float* segment_states;
  float* segment_log_decay;
  // The output launch reads the segment start states transposed: [max_items, H, V, K] (the
  // backward's dk pass starting from the dv pass's scanned states, chunked/backward.cuh).
  bool segment_states_transposed;
  // Sequence parallelism (sequence_parallel.cuh): the delta launch also runs each sequence's last
  // segment and writes its contribution here, [N, H, K, V] contiguous (its log-decay goes into
  // segment_log_decay like the others'); null otherwise.
  float* last_delta;
  // The vector gate's sm_90a output launch (chunked/key_gate_sm90.cuh) runs only chunks whose
  // cumulative gates stay inside its separable range; a CTA that meets another stops and sets its
  // entry here ([grid], one per CTA, 0 or 1), and the mma.sync kernel, launched after it with
  // fallback_only, runs exactly the flagged CTAs' work again. Null: no such launch.
  int* fallback_flags;
  bool fallback_only;

  // Decode: the state [B, H, K, V] advanced in place, and the tokens staged per pass over it.
  float* state;
  Strides4 ss;
  bool state_vectorized;  // unit-stride, 16-byte aligned rows: float4 access
  int token_group;
};

}  // namespace lcsm::cuda::detail
