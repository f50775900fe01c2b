// Sequence parallelism's backward with R virtual ranks on one GPU: one host thread and stream per
// rank, the public backward over a stand-in Collective (the all-gather as device copies between
// host barriers), against the single-GPU backward of the whole sequences.
#include <cuda_bf16.h>

#include <cmath>
#include <condition_variable>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "cuda/device_buffer.cuh"
#include "cuda/fill.cuh"
#include "cuda/sequence_parallel_checks.hpp"
#include "cuda/sequence_parallel_support.cuh"
#include "lcsm/cuda.cuh"
#include "lcsm/cuda/sequence_parallel/backward.cuh"

namespace lcsm::test {
namespace {

// R host threads meeting at a barrier.
class Meeting {
 public:
  explicit Meeting(int ranks) : ranks_(ranks), sends_(ranks) {}
  void barrier() {
    std::unique_lock<std::mutex> lock(mutex_);
    const int generation = generation_;
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation != generation_; });
    }
  }
  std::vector<const void*>& sends() { return sends_; }

 private:
  int ranks_;
  std::vector<const void*> sends_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0, generation_ = 0;
};

// The all-gather of R threads on one GPU: each publishes its send buffer (its stream drained), then
// copies everyone's, then waits until everyone has copied.
class ThreadCollective final : public cuda::sequence_parallel::Collective {
 public:
  ThreadCollective(Meeting& m, int rank, int ranks) : m_(m), rank_(rank), ranks_(ranks) {}
  int rank() const override { return rank_; }
  int size() const override { return ranks_; }
  void all_gather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream) override {
    LCSM_CUDA_CHECK(cudaStreamSynchronize(stream));
    m_.sends()[rank_] = send;
    m_.barrier();
    for (int q = 0; q < ranks_; ++q)
      LCSM_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(recv) + q * bytes, m_.sends()[q], bytes,
                                      cudaMemcpyDeviceToDevice, stream));
    LCSM_CUDA_CHECK(cudaStreamSynchronize(stream));
    m_.barrier();
  }

 private:
  Meeting& m_;
  int rank_, ranks_;
};

template <class E>
SequenceParallelBackwardResult run(const SequenceParallelCase& c) {
  const std::int64_t B = c.batch, H = c.heads, K = c.key_dim, V = c.value_dim;
  const std::int64_t T = std::accumulate(c.slices.begin(), c.slices.end(), std::int64_t{0});
  const int R = static_cast<int>(c.slices.size());
  const std::int64_t W = c.family == LongFamily::vector_gate ? K : 1;
  const std::int64_t nk = B * T * H * K, nv = B * T * H * V, ns = B * H * K * V;
  DeviceBuffer q(nk * sizeof(E)), k(q.bytes()), v(nv * sizeof(E)), d_o(v.bytes()), gate(B * T * H * W * 4), s0(ns * 4),
      d_final(ns * 4);
  // [0]: single GPU, [1]: sequence parallel
  DeviceBuffer dq[2] = {DeviceBuffer(q.bytes()), DeviceBuffer(q.bytes())},
               dk[2] = {DeviceBuffer(q.bytes()), DeviceBuffer(q.bytes())},
               dv[2] = {DeviceBuffer(v.bytes()), DeviceBuffer(v.bytes())},
               d_init[2] = {DeviceBuffer(ns * 4), DeviceBuffer(ns * 4)},
               d_gate[2] = {DeviceBuffer(c.family == LongFamily::lightning ? H * 4 : B * T * H * W * 4),
                            DeviceBuffer(c.family == LongFamily::lightning ? H * 4 : B * T * H * W * 4)};
  fill_normal<<<1024, 256>>>(static_cast<E*>(q.get()), nk, c.seed);
  fill_normal<<<1024, 256>>>(static_cast<E*>(k.get()), nk, c.seed + 1);
  fill_normal<<<1024, 256>>>(static_cast<E*>(v.get()), nv, c.seed + 2);
  fill_normal<<<1024, 256>>>(static_cast<E*>(d_o.get()), nv, c.seed + 3);
  fill_normal<<<1024, 256>>>(static_cast<float*>(s0.get()), ns, c.seed + 4);
  fill_normal<<<1024, 256>>>(static_cast<float*>(d_final.get()), ns, c.seed + 5);
  fill_log_gate<><<<1024, 256>>>(static_cast<float*>(gate.get()), B * T * H * W, c.seed + 6);
  shape_gates<><<<1024, 256>>>(static_cast<float*>(gate.get()), B * T * H * W, H * W, c.gates);
  for (auto* b : {&dq[1], &dk[1], &dv[1], &d_gate[1]}) LCSM_CUDA_CHECK(cudaMemset(b->get(), 0xFF, b->bytes()));
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());

  auto rows = [&](const DeviceBuffer& b, std::int64_t D, std::int64_t t0, std::int64_t n) {
    return View<E, 4>(static_cast<E*>(b.get()) + t0 * H * D, {B, n, H, D}, {T * H * D, H * D, D, 1});
  };
  auto in = [](const View<E, 4>& x) { return View<const E, 4>(x.data(), x.shape(), x.strides()); };
  auto state = [&](const DeviceBuffer& b) { return lcsm::view(static_cast<float*>(b.get()), {B, H, K, V}); };
  auto cstate = [&](const DeviceBuffer& b) {
    const auto s = state(b);
    return View<const float, 4>(s.data(), s.shape(), s.strides());
  };
  // f(op, d_decay view) over tokens [t0, t0 + n) of the gate and of gradient buffer g.
  auto with_op = [&](std::int64_t t0, std::int64_t n, const DeviceBuffer& g, auto&& f) {
    auto* gp = static_cast<float*>(g.get());
    if (c.family == LongFamily::lightning) {
      LightningAttention op;
      op.log_decay = decay::minimax(static_cast<int>(H), 0, 80);
      f(op, lcsm::view(gp, {H}));
    } else if (c.family == LongFamily::scalar_gate) {
      ScalarGatedAttention<E> op;
      op.log_gate = View<const float, 3>(static_cast<const float*>(gate.get()) + t0 * H, {B, n, H}, {T * H, H, 1});
      f(op, View<float, 3>(gp + t0 * H, {B, n, H}, {T * H, H, 1}));
    } else {
      VectorGatedAttention<E> op;
      op.log_gate = View<const float, 4>(static_cast<const float*>(gate.get()) + t0 * H * K, {B, n, H, K},
                                         {T * H * K, H * K, K, 1});
      f(op, View<float, 4>(gp + t0 * H * K, {B, n, H, K}, {T * H * K, H * K, K, 1}));
    }
  };

  with_op(0, T, d_gate[0], [&](const auto& op, auto dd) {
    const StateGrads<float> st{cstate(s0), cstate(d_final), state(d_init[0])};
    const DeviceBuffer ws(cuda::backward_workspace_bytes<E>(op, in(rows(q, K, 0, T)), in(rows(v, V, 0, T)), st, dd));
    lcsm::backward<E>(cuda::Device{nullptr, {ws.get(), ws.bytes()}}, op, in(rows(q, K, 0, T)), in(rows(k, K, 0, T)),
                      in(rows(v, V, 0, T)), in(rows(d_o, V, 0, T)), rows(dq[0], K, 0, T), rows(dk[0], K, 0, T),
                      rows(dv[0], V, 0, T), st, dd);
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
  });

  std::vector<std::int64_t> starts(R, 0);
  for (int r = 1; r < R; ++r) starts[r] = starts[r - 1] + c.slices[r - 1];
  std::vector<DeviceBuffer> d_init_ranks;
  for (int r = 0; r < R; ++r) d_init_ranks.emplace_back(ns * 4);
  Meeting meeting(R);
  std::vector<std::thread> threads;
  std::vector<std::string> errors(R);
  for (int r = 0; r < R; ++r)
    threads.emplace_back([&, r] {
      try {
        cudaStream_t stream;
        LCSM_CUDA_CHECK(cudaStreamCreate(&stream));
        ThreadCollective comm(meeting, r, R);
        const std::int64_t t0 = starts[r], n = c.slices[r];
        with_op(t0, n, d_gate[1], [&](const auto& op, auto dd) {
          const StateGrads<float> st{r == 0 ? cstate(s0) : View<const float, 4>{},
                                     r == R - 1 ? cstate(d_final) : View<const float, 4>{}, state(d_init_ranks[r])};
          const DeviceBuffer ws(cuda::sequence_parallel::backward_workspace_bytes(op, in(rows(q, K, t0, n)),
                                                                                  in(rows(v, V, t0, n)), R, true));
          // lightning's d_log_decay is every rank's whole: rank 0 writes the compared buffer.
          auto d = dd;
          DeviceBuffer own;
          if constexpr (std::is_same_v<std::decay_t<decltype(op)>, LightningAttention>) {
            if (r != 0) {
              own = DeviceBuffer(H * 4);
              d = lcsm::view(static_cast<float*>(own.get()), {H});
            }
          }
          cuda::sequence_parallel::backward<E>(cuda::Device{stream, {ws.get(), ws.bytes()}}, comm, op,
                                               in(rows(q, K, t0, n)), in(rows(k, K, t0, n)), in(rows(v, V, t0, n)),
                                               in(rows(d_o, V, t0, n)), rows(dq[1], K, t0, n), rows(dk[1], K, t0, n),
                                               rows(dv[1], V, t0, n), st, d);
          LCSM_CUDA_CHECK(cudaStreamSynchronize(stream));
        });
        LCSM_CUDA_CHECK(cudaStreamDestroy(stream));
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (!e.empty()) throw std::runtime_error("sequence-parallel backward: " + e);

  SequenceParallelBackwardResult res{};
  res.dq_rel_rms = relative_difference(fetch_as_double<E>(dq[1].get(), nk), fetch_as_double<E>(dq[0].get(), nk));
  res.dk_rel_rms = relative_difference(fetch_as_double<E>(dk[1].get(), nk), fetch_as_double<E>(dk[0].get(), nk));
  res.dv_rel_rms = relative_difference(fetch_as_double<E>(dv[1].get(), nv), fetch_as_double<E>(dv[0].get(), nv));
  res.d_initial_rel_rms = relative_difference(fetch_as_double<float>(d_init_ranks[0].get(), ns),
                                              fetch_as_double<float>(d_init[0].get(), ns));
  const std::size_t gates = d_gate[0].bytes() / 4;
  res.d_decay_rel_rms = relative_difference(fetch_as_double<float>(d_gate[1].get(), gates),
                                            fetch_as_double<float>(d_gate[0].get(), gates));
  return res;
}

}  // namespace

SequenceParallelBackwardResult run_sequence_parallel_backward(const SequenceParallelCase& c) {
  return c.fp32 ? run<float>(c) : run<__nv_bfloat16>(c);
}

}  // namespace lcsm::test
