// cosFormer on CUDA: forward (causal and non-causal), backward and decode step. Include from a .cu
// file.
//
//   lcsm::CosFormerAttention op;                       // ReLU, causal, M = each sequence's end
//   lcsm::cuda::Device dev{stream, {workspace_ptr, workspace_bytes}};
//   lcsm::forward<__nv_bfloat16>(dev, op, q, k, v, o, {initial_state, final_state}, cu_seqlens);
//   lcsm::backward<__nv_bfloat16>(dev, op, q, k, v, d_o, dq, dk, dv, {s0, d_final, d_initial}, cu_seqlens);
//   op.length = M;  op.positions = positions;          // decode: M fixed, [B] first positions
//   lcsm::step<__nv_bfloat16>(dev, op, q1, k1, v1, o1, state);
//
// As lightning attention (lightning.cuh): device memory, the caller's stream and workspace
// (lcsm::cuda::forward_workspace_bytes), no synchronisation, cu_seqlens contents unread. States are
// fp32 [N, H, 2K, V + 1] as on the CPU (ops/cosformer.hpp); K <= 128 (the state's 2K rows are the
// engine's key tile, at most 256). op.positions ([N] int64) lives in device memory too and its
// contents are not read on the host: a negative position is taken as 0, and positions at or past
// M give weights cos(..) <= 0 (wrong results, never bad accesses); the CPU backend checks them.
// The algorithm is the chunked engine's with the cosine policy (chunked/cosine_sm80.cuh): the
// mma.sync kernel on every GPU. op.chunk is the CPU's; the engine picks its own chunk. The backward
// runs the engine over the features, fp32 in exact mode and bf16 in fast mode
// (chunked/cosine_backward.cuh; its workspace: lcsm::cuda::backward_workspace_bytes).
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/cosine_backward.cuh"
#include "lcsm/cuda/chunked/run.cuh"
#include "lcsm/cuda/chunked/scan.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/ops/cosformer.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cuda {
namespace detail {

// op.positions on CUDA: absent, or [N] contiguous int64 in device memory (required for decode).
inline void check_cosine_positions(const char* where, const CosFormerAttention& op, std::int64_t sequences,
                                   bool required) {
  using namespace lcsm::detail;
  if (required && op.positions.absent())
    throw_argument(where, "op.positions", concat("[", sequences, "] positions of the first decode token per sequence"),
                   "an absent view");
  if (op.positions.absent()) return;
  check_memory(where, "op.positions", op.positions);
  check_shape(where, "op.positions", op.positions, {sequences}, "[N], one position per sequence");
  check_argument(op.positions.stride(0) == 1 || sequences <= 1, where, "op.positions", "contiguous positions",
                 concat("stride ", op.positions.stride(0)));
}

// What the host can see of "every position below M": one batch of T tokens from position 0.
inline void check_cosine_length(const char* where, const CosFormerAttention& op, const ProblemShape& shape,
                                bool varlen) {
  if (op.length && !varlen && op.positions.absent() && shape.time > *op.length)
    lcsm::detail::throw_argument(where, "op.length", "M >= position + length of every sequence",
                                 lcsm::detail::concat("M = ", *op.length, " smaller than the length T = ", shape.time));
}

// Bytes of each sequence's whole sums, [N, H, 2K, V + 1] fp32 (the non-causal forward's totals).
inline std::size_t whole_sums_bytes(const ProblemShape& s) {
  return round_up_256(static_cast<std::size_t>(s.sequences * s.heads * 2 * s.key_dim * (s.value_dim + 1)) * 4);
}

// The forward's plan: the engine's, plus (non-causal) each sequence's whole sums and the fold's
// N x H log2 totals (zero here) at the end of the workspace.
inline ChunkPlan plan_cosine(const ProblemShape& s, bool varlen, bool causal) {
  ChunkPlan plan = plan_forward<DecayKind::cosine>(s, varlen);
  if (!causal)
    plan.totals_bytes = whole_sums_bytes(s) + round_up_256(static_cast<std::size_t>(s.sequences * s.heads) * 4);
  return plan;
}

// Non-causal: every segment's sums (the delta phase, the last segment included), folded with the
// initial state into each sequence's whole sums (slice_fold_kernel), which every token then reads
// (the output phase with p.bidirectional).
template <class T>
void run_cosine_bidirectional(RecurrenceParams p, const ChunkPlan& plan, const Device& device, Precision precision,
                              const ProblemShape& shape) {
  set_plan(p, plan, device);
  auto* totals = static_cast<char*>(device.workspace.data) + (plan.workspace_bytes() - plan.totals_bytes);
  p.last_delta = reinterpret_cast<float*>(totals);
  auto* total_log2 = reinterpret_cast<float*>(totals + whole_sums_bytes(shape));
  run_forward<T, DecayKind::cosine>(p, plan, device, precision, ForwardPhase::deltas);
  const std::int64_t elements =
      static_cast<std::int64_t>(state_rows<DecayKind::cosine>(p)) * state_cols<DecayKind::cosine>(p);
  const std::int64_t blocks = (elements + kScanThreads - 1) / kScanThreads * shape.heads * shape.sequences;
  slice_fold_kernel<DecayKind::cosine>
      <<<grid_size(blocks, "state elements"), kScanThreads, 0, device.stream>>>(p, total_log2);
  LCSM_CUDA_CHECK(cudaGetLastError());
  p.bidirectional = true;
  run_forward<T, DecayKind::cosine>(p, plan, device, precision, ForwardPhase::outputs);
}

inline void set_cosine(RecurrenceParams& p, const CosFormerAttention& op) {
  p.positions = op.positions.present() ? op.positions.data() : nullptr;
  p.cos_length = op.length ? *op.length : 0;
  p.eps = static_cast<float>(op.eps);
  p.relu = op.feature_map == CosFormerAttention::FeatureMap::relu;
}

}  // namespace detail

// Scratch bytes a forward call with these shapes needs on the current device (0: none).
template <class T>
std::size_t forward_workspace_bytes(const CosFormerAttention& op, View<const T, 4> q, View<const T, 4> v,
                                    const CuSeqlens& cu_seqlens = {}) {
  const std::int64_t sequences = cu_seqlens.present() ? cu_seqlens.num_sequences() : q.size(0);
  const lcsm::detail::ProblemShape shape{1, q.size(1), q.size(2), q.size(3), v.size(3), sequences};
  lcsm::detail::check_problem_size("lcsm::cuda::forward_workspace_bytes", cu_seqlens.present() ? "cu_seqlens" : "q",
                                   shape);
  return detail::plan_cosine(shape, cu_seqlens.present(), op.causal).workspace_bytes();
}

// Scratch bytes a backward call with these arguments needs on the current device (never 0: the fp32
// features of every token).
template <class T>
std::size_t backward_workspace_bytes(const CosFormerAttention& op, View<const T, 4> q, View<const T, 4> v,
                                     const StateGrads<float>& states = {}, const CuSeqlens& cu_seqlens = {}) {
  const std::int64_t sequences = cu_seqlens.present() ? cu_seqlens.num_sequences() : q.size(0);
  const lcsm::detail::ProblemShape shape{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), sequences};
  lcsm::detail::check_problem_size("lcsm::cuda::backward_workspace_bytes", cu_seqlens.present() ? "cu_seqlens" : "q",
                                   detail::cosine_feature_shape(shape));
  return detail::plan_cosine_backward(shape, cu_seqlens.present(), op.causal, states.d_final.present(),
                                      states.d_initial.present(), op.precision)
      .bytes();
}

}  // namespace cuda

// Forward on the GPU: o = cosFormer(q, k, v) with optional fp32 [N, H, 2K, V + 1] initial and final
// states (non-causal: the final state is the initial one plus the whole sequence's sums).
template <class T>
void forward(const cuda::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<float>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA cosFormer takes float, __half or __nv_bfloat16");
  using cuda::detail::DecayKind;
  const char* where = "lcsm::forward(cuda, CosFormerAttention)";
  detail::Operands ops(where);
  ops.in("op.positions", op.positions);
  const auto shape =
      cuda::detail::check_forward_call(where, q, k, v, o, state, cu_seqlens, ops, detail::StateLayout::cosformer);
  op.check(where);
  detail::check_argument(shape.key_dim <= 128, where, "q", "K <= 128 (the state's 2K rows on CUDA)",
                         detail::concat("K = ", shape.key_dim));
  cuda::detail::check_cosine_positions(where, op, shape.sequences, false);
  cuda::detail::check_cosine_length(where, op, shape, cu_seqlens.present());
  if (shape.batch == 0 || shape.sequences == 0 || (shape.time == 0 && state.final.absent())) return;

  const auto plan = cuda::detail::plan_cosine(shape, cu_seqlens.present(), op.causal);
  cuda::detail::check_workspace(where, device, plan);
  auto params = cuda::detail::make_params(q, k, v, o, 1.0, shape);
  cuda::detail::set_states(params, state, cu_seqlens);
  cuda::detail::set_cosine(params, op);
  if (op.causal) cuda::detail::run_forward<T, DecayKind::cosine>(params, plan, device, op.precision);
  else cuda::detail::run_cosine_bidirectional<T>(params, plan, device, op.precision, shape);
}

// Backward on the GPU: dq, dk, dv from do, and optionally the gradient of the fp32 [N, H, 2K, V + 1]
// initial state (from the final state's), as on the CPU. Gradients in the input type; K <= 128,
// V <= 256 (the feature problem's 2K keys and V values are the engine's, at most 256), H <= 256.
template <class T>
void backward(const cuda::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, View<T, 4> dq, detail::identity_t<View<T, 4>> dk,
              detail::identity_t<View<T, 4>> dv, const StateGrads<float>& states = {},
              const CuSeqlens& cu_seqlens = {}) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA cosFormer takes float, __half or __nv_bfloat16");
  const char* where = "lcsm::backward(cuda, CosFormerAttention)";
  detail::Operands ops(where);
  ops.in("op.positions", op.positions);
  const auto shape = detail::check_backward(where, q, k, v, d_o, dq, dk, dv, states, cu_seqlens, ops,
                                            detail::StateLayout::cosformer, detail::OffsetsAt::device);
  if (cu_seqlens.present())
    detail::check_argument(cu_seqlens.stride() == 1, where, "cu_seqlens", "contiguous offsets",
                           detail::concat("stride ", cu_seqlens.stride()));
  op.check(where);
  detail::check_argument(shape.key_dim <= 128, where, "q", "K <= 128 (the state's 2K rows on CUDA)",
                         detail::concat("K = ", shape.key_dim));
  detail::check_argument(shape.value_dim <= 256, where, "v", "V <= 256 (the backward's values on CUDA)",
                         detail::concat("V = ", shape.value_dim));
  detail::check_argument(shape.heads <= cuda::detail::kMaxHeads, where, "q",
                         detail::concat("H <= ", cuda::detail::kMaxHeads), detail::concat("H = ", shape.heads));
  cuda::detail::check_cosine_positions(where, op, shape.sequences, false);
  cuda::detail::check_cosine_length(where, op, shape, cu_seqlens.present());
  if (shape.batch == 0 || shape.sequences == 0 || (shape.time == 0 && states.d_initial.absent())) return;

  const auto plan = cuda::detail::plan_cosine_backward(shape, cu_seqlens.present(), op.causal, states.d_final.present(),
                                                       states.d_initial.present(), op.precision);
  cuda::detail::check_backward_workspace(where, device, plan);
  cuda::detail::RecurrenceParams cosine{};
  cuda::detail::set_cosine(cosine, op);
  cuda::detail::run_cosine_backward<T>({q, k, v, d_o, dq, dk, dv, states, cu_seqlens, 1.0, op.precision, shape}, cosine,
                                       op.causal, plan, device);
}

// Decode on the GPU: advances state [B, H, 2K, V + 1] (fp32, in place) by the n tokens of q, k
// [B, n, H, K], v [B, n, H, V], writing o [B, n, H, V]. Causal only; op.length (M) and op.positions
// ([B] int64 in device memory, the position of each sequence's first decode token) are required.
template <class T>
void step(const cuda::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<float, 4> state) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA cosFormer takes float, __half or __nv_bfloat16");
  using cuda::detail::DecayKind;
  const char* where = "lcsm::step(cuda, CosFormerAttention)";
  detail::Operands ops(where);
  ops.in("op.positions", op.positions);
  const auto shape = detail::check_step(where, q, k, v, o, state, ops, detail::StateLayout::cosformer);
  op.check(where);
  detail::check_argument(op.causal, where, "op.causal", "true (decode is causal)", "false");
  if (!op.length) detail::throw_argument(where, "op.length", "M set for decode (the prefill's M)", "unset");
  cuda::detail::check_cosine_positions(where, op, shape.batch, true);
  detail::check_argument(2 * shape.key_dim <= 16384, where, "q", "K <= 8192", detail::concat("K = ", shape.key_dim));
  detail::check_argument(shape.value_dim < 1024, where, "v", "V < 1024", detail::concat("V = ", shape.value_dim));
  if (shape.batch == 0 || shape.time == 0) return;

  auto params = cuda::detail::make_params(q, k, v, o, 1.0, shape);
  cuda::detail::set_cosine(params, op);
  cuda::detail::run_step<T, DecayKind::cosine>(params, state, device.stream);
}

}  // namespace lcsm
