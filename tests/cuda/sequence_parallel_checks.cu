// Sequence parallelism with R virtual ranks on one GPU (the stand-in collective: every rank's first
// phase, the gather as device copies, every rank's second phase) against the single-GPU forward of
// the whole sequences.
#include <cuda_bf16.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "cuda/device_buffer.cuh"
#include "cuda/fill.cuh"
#include "cuda/sequence_parallel_checks.hpp"
#include "cuda/sequence_parallel_support.cuh"
#include "lcsm/cuda.cuh"
#include "lcsm/cuda/sequence_parallel/forward.cuh"

namespace lcsm::test {
namespace {

template <class E>
SequenceParallelResult run(const SequenceParallelCase& c) {
  const std::int64_t B = c.batch, H = c.heads, K = c.key_dim, V = c.value_dim;
  const std::int64_t T = std::accumulate(c.slices.begin(), c.slices.end(), std::int64_t{0});
  const int R = static_cast<int>(c.slices.size());
  const std::int64_t W = c.family == LongFamily::vector_gate ? K : 1;
  DeviceBuffer q(B * T * H * K * sizeof(E)), k(q.bytes()), v(B * T * H * V * sizeof(E)), o_ref(v.bytes()),
      o_sp(v.bytes()), gate(B * T * H * W * 4), s0(B * H * K * V * 4), final_ref(s0.bytes());
  std::vector<DeviceBuffer> finals;
  for (int r = 0; r < R; ++r) finals.emplace_back(s0.bytes());
  fill_normal<<<1024, 256>>>(static_cast<E*>(q.get()), B * T * H * K, c.seed);
  fill_normal<<<1024, 256>>>(static_cast<E*>(k.get()), B * T * H * K, c.seed + 1);
  fill_normal<<<1024, 256>>>(static_cast<E*>(v.get()), B * T * H * V, c.seed + 2);
  fill_normal<<<1024, 256>>>(static_cast<float*>(s0.get()), B * H * K * V, c.seed + 3);
  fill_log_gate<><<<1024, 256>>>(static_cast<float*>(gate.get()), B * T * H * W, c.seed + 4);
  shape_gates<><<<1024, 256>>>(static_cast<float*>(gate.get()), B * T * H * W, H * W, c.gates);
  LCSM_CUDA_CHECK(cudaMemset(o_sp.get(), 0xFF, o_sp.bytes()));  // poisoned: every output must be written
  LCSM_CUDA_CHECK(cudaGetLastError());

  // Views of tokens [t0, t0 + n) of every sequence (the whole tensor's strides).
  auto rows = [&](const DeviceBuffer& b, std::int64_t D, std::int64_t t0, std::int64_t n) {
    return View<E, 4>(static_cast<E*>(b.get()) + t0 * H * D, {B, n, H, D}, {T * H * D, H * D, D, 1});
  };
  auto state = [&](const DeviceBuffer& b) { return lcsm::view(static_cast<float*>(b.get()), {B, H, K, V}); };
  const auto s0v = state(s0);
  const View<const float, 4> s0c(s0v.data(), s0v.shape(), s0v.strides());

  // The op over tokens [t0, t0 + n) of the gate.
  auto with_op = [&](std::int64_t t0, std::int64_t n, auto&& f) {
    if (c.family == LongFamily::lightning) {
      LightningAttention op;
      op.log_decay = decay::minimax(static_cast<int>(H), 0, 80);
      f(op);
    } else if (c.family == LongFamily::scalar_gate) {
      ScalarGatedAttention<E> op;
      op.log_gate = View<const float, 3>(static_cast<const float*>(gate.get()) + t0 * H, {B, n, H}, {T * H, H, 1});
      f(op);
    } else {
      VectorGatedAttention<E> op;
      op.log_gate = View<const float, 4>(static_cast<const float*>(gate.get()) + t0 * H * K, {B, n, H, K},
                                         {T * H * K, H * K, K, 1});
      f(op);
    }
  };
  auto in = [](const View<E, 4>& x) { return View<const E, 4>(x.data(), x.shape(), x.strides()); };

  with_op(0, T, [&](const auto& op) {  // the single-GPU forward of the whole sequences
    const DeviceBuffer ws(cuda::forward_workspace_bytes<E>(op, in(rows(q, K, 0, T)), in(rows(v, V, 0, T))) + 256);
    lcsm::forward<E>(cuda::Device{nullptr, {ws.get(), ws.bytes()}}, op, in(rows(q, K, 0, T)), in(rows(k, K, 0, T)),
                     in(rows(v, V, 0, T)), rows(o_ref, V, 0, T), {s0c, state(final_ref)});
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  });

  // R virtual ranks: first phases, the gather, second phases.
  std::vector<DeviceBuffer> workspaces;
  std::vector<std::int64_t> starts(R, 0);
  for (int r = 1; r < R; ++r) starts[r] = starts[r - 1] + c.slices[r - 1];
  with_op(0, T, [&](const auto& whole) {
    using Op = std::decay_t<decltype(whole)>;
    using Slice = decltype(cuda::sequence_parallel::detail::make_slice<E>(
        "", cuda::Device{}, whole, in(rows(q, K, 0, 0)), in(rows(k, K, 0, 0)), in(rows(v, V, 0, 0)),
        rows(o_sp, V, 0, 0), StateIO<float>{}, 0, 1));
    std::vector<Slice> slices;
    std::vector<Op> ops;
    for (int r = 0; r < R; ++r)
      with_op(starts[r], c.slices[r], [&](const auto& op) {
        if constexpr (std::is_same_v<std::decay_t<decltype(op)>, Op>) ops.push_back(op);
      });
    for (int r = 0; r < R; ++r) {
      const std::int64_t t0 = starts[r], n = c.slices[r];
      const auto qr = in(rows(q, K, t0, n)), vr = in(rows(v, V, t0, n));
      workspaces.emplace_back(cuda::sequence_parallel::forward_workspace_bytes(ops[r], qr, vr, R));
      slices.push_back(cuda::sequence_parallel::detail::make_slice<E>(
          "sequence_parallel test", cuda::Device{nullptr, {workspaces[r].get(), workspaces[r].bytes()}}, ops[r], qr,
          in(rows(k, K, t0, n)), vr, rows(o_sp, V, t0, n),
          StateIO<float>{r == 0 ? s0c : View<const float, 4>{}, state(finals[r])}, r, R));
    }
    for (auto& s : slices) s.deltas();
    if (c.tamper_header) {  // rank 1 claims other head count: every rank must see it
      const int wrong = static_cast<int>(H) + 1;
      LCSM_CUDA_CHECK(cudaMemcpy(static_cast<char*>(const_cast<void*>(slices[1].send())) + 3 * sizeof(int), &wrong,
                                 sizeof(int), cudaMemcpyHostToDevice));
    }
    for (auto& dst : slices)
      for (int qq = 0; qq < R; ++qq)
        LCSM_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst.recv()) + qq * slices[qq].block_bytes(),
                                        slices[qq].send(), slices[qq].block_bytes(), cudaMemcpyDeviceToDevice));
    for (auto& s : slices) s.outputs();
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  });

  SequenceParallelResult res{};
  const auto got = fetch_as_double<E>(o_sp.get(), o_sp.bytes() / sizeof(E)),
             want = fetch_as_double<E>(o_ref.get(), o_ref.bytes() / sizeof(E));
  res.output_rel_rms = relative_difference(got, want);
  res.final_rel_rms = relative_difference(fetch_as_double<float>(finals[R - 1].get(), finals[R - 1].bytes() / 4),
                                          fetch_as_double<float>(final_ref.get(), final_ref.bytes() / 4));
  res.all_outputs_nan = true;
  for (double x : got) res.all_outputs_nan = res.all_outputs_nan && std::isnan(x);
  return res;
}

}  // namespace

SequenceParallelResult run_sequence_parallel(const SequenceParallelCase& c) {
  return c.fp32 ? run<float>(c) : run<__nv_bfloat16>(c);
}

}  // namespace lcsm::test
