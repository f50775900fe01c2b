// Sequence parallelism's NCCL front-end on the GPUs of this machine (one process, one communicator
// per GPU from ncclCommInitAll): every family's forward, bf16 and fp32, the sequences cut into
// ragged slices over the ranks, against the single-GPU forward on GPU 0. With one GPU this is one
// rank: the NCCL path end to end (the algorithm's multi-rank cases are in lcsm_tests_cuda, with
// virtual ranks). Prints a line per case; exit status 1 when a case is off.
#include <cuda_bf16.h>
#include <nccl.h>

#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>

#include "cuda/device_buffer.cuh"
#include "cuda/fill.cuh"
#include "lcsm/cuda.cuh"
#include "lcsm/cuda/sequence_parallel.cuh"

namespace {

using namespace lcsm;
using lcsm::test::DeviceBuffer;

template <class E>
std::vector<double> fetch(const void* p, std::size_t count) {
  std::vector<E> raw(count);
  LCSM_CUDA_CHECK(cudaMemcpy(raw.data(), p, count * sizeof(E), cudaMemcpyDefault));
  std::vector<double> out(count);
  for (std::size_t i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<E, __nv_bfloat16>) out[i] = __bfloat162float(raw[i]);
    else out[i] = raw[i];
  }
  return out;
}

double rel_rms(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return NAN;
    num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

// family 0 lightning, 1 scalar gate, 2 vector gate.
template <class E>
bool run_case(int family, const std::vector<ncclComm_t>& comms, const std::vector<int>& devices) {
  const int R = static_cast<int>(devices.size());
  const std::int64_t B = 2, H = 4, K = 64, V = 64;
  std::vector<std::int64_t> slices;
  for (int r = 0; r < R; ++r) slices.push_back(300 + 97 * r);
  std::int64_t T = 0;
  for (auto s : slices) T += s;
  const std::int64_t W = family == 2 ? K : 1;
  // Inputs on GPU 0, whole; each rank gets a copy of its slice on its own GPU.
  LCSM_CUDA_CHECK(cudaSetDevice(devices[0]));
  DeviceBuffer q(B * T * H * K * sizeof(E)), k(q.bytes()), v(B * T * H * V * sizeof(E)), o(v.bytes()),
      g(B * T * H * W * 4), fin(B * H * K * V * 4);
  lcsm::test::fill_normal<<<256, 256>>>(static_cast<E*>(q.get()), B * T * H * K, 11);
  lcsm::test::fill_normal<<<256, 256>>>(static_cast<E*>(k.get()), B * T * H * K, 12);
  lcsm::test::fill_normal<<<256, 256>>>(static_cast<E*>(v.get()), B * T * H * V, 13);
  lcsm::test::fill_log_gate<><<<256, 256>>>(static_cast<float*>(g.get()), B * T * H * W, 14);
  auto with_op = [&](const float* gate, std::int64_t t_all, std::int64_t n, auto&& f) {
    if (family == 0) {
      LightningAttention op;
      op.log_decay = decay::minimax(static_cast<int>(H), 0, 80);
      f(op);
    } else if (family == 1) {
      ScalarGatedAttention<E> op;
      op.log_gate = View<const float, 3>(gate, {B, n, H}, {t_all * H, H, 1});
      f(op);
    } else {
      VectorGatedAttention<E> op;
      op.log_gate = View<const float, 4>(gate, {B, n, H, K}, {t_all * H * K, H * K, K, 1});
      f(op);
    }
  };
  auto view4 = [&](const void* p, std::int64_t t_all, std::int64_t n, std::int64_t D) {
    return View<const E, 4>(static_cast<const E*>(p), {B, n, H, D}, {t_all * H * D, H * D, D, 1});
  };
  with_op(static_cast<const float*>(g.get()), T, T, [&](const auto& op) {
    DeviceBuffer ws(lcsm::cuda::forward_workspace_bytes<E>(op, view4(q.get(), T, T, K), view4(v.get(), T, T, V)) + 256);
    lcsm::forward<E>(lcsm::cuda::Device{nullptr, {ws.get(), ws.bytes()}}, op, view4(q.get(), T, T, K),
                     view4(k.get(), T, T, K), view4(v.get(), T, T, V),
                     lcsm::view(static_cast<E*>(o.get()), {B, T, H, V}),
                     {{}, lcsm::view(static_cast<float*>(fin.get()), {B, H, K, V})});
  });
  LCSM_CUDA_CHECK(cudaDeviceSynchronize());

  // Per rank: its slice copied to its GPU (rows of B sequences: one 2D copy per tensor).
  struct Rank {
    DeviceBuffer q, k, v, o, g, fin, ws;
    cudaStream_t stream;
  };
  std::vector<Rank> ranks(R);
  std::int64_t t0 = 0;
  auto slice_copy = [&](DeviceBuffer& dst, const DeviceBuffer& src, std::int64_t row, std::int64_t n,
                        std::size_t elem) {
    LCSM_CUDA_CHECK(cudaMemcpy2D(dst.get(), n * row * elem, static_cast<const char*>(src.get()) + t0 * row * elem,
                                 T * row * elem, n * row * elem, B, cudaMemcpyDefault));
  };
  for (int r = 0; r < R; ++r) {
    LCSM_CUDA_CHECK(cudaSetDevice(devices[r]));
    const std::int64_t n = slices[r];
    Rank& x = ranks[r];
    x.q = DeviceBuffer(B * n * H * K * sizeof(E)), x.k = DeviceBuffer(x.q.bytes());
    x.v = DeviceBuffer(B * n * H * V * sizeof(E)), x.o = DeviceBuffer(x.v.bytes());
    x.g = DeviceBuffer(B * n * H * W * 4), x.fin = DeviceBuffer(fin.bytes());
    slice_copy(x.q, q, H * K, n, sizeof(E)), slice_copy(x.k, k, H * K, n, sizeof(E));
    slice_copy(x.v, v, H * V, n, sizeof(E)), slice_copy(x.g, g, H * W, n, 4);
    LCSM_CUDA_CHECK(cudaStreamCreate(&x.stream));
    with_op(static_cast<const float*>(x.g.get()), n, n, [&](const auto& op) {
      x.ws = DeviceBuffer(lcsm::cuda::sequence_parallel::forward_workspace_bytes(op, view4(x.q.get(), n, n, K),
                                                                                 view4(x.v.get(), n, n, V), R));
    });
    t0 += n;
  }
  // One host thread per rank (a communicator's calls from one thread for several GPUs would need
  // NCCL's group calls, which defer the collective past the kernels enqueued after it).
  std::vector<std::thread> threads;
  for (int r = 0; r < R; ++r)
    threads.emplace_back([&, r] {
      LCSM_CUDA_CHECK(cudaSetDevice(devices[r]));
      Rank& x = ranks[r];
      const std::int64_t n = slices[r];
      with_op(static_cast<const float*>(x.g.get()), n, n, [&](const auto& op) {
        lcsm::cuda::sequence_parallel::forward<E>(
            lcsm::cuda::Device{x.stream, {x.ws.get(), x.ws.bytes()}}, comms[r], op, view4(x.q.get(), n, n, K),
            view4(x.k.get(), n, n, K), view4(x.v.get(), n, n, V), lcsm::view(static_cast<E*>(x.o.get()), {B, n, H, V}),
            {{}, lcsm::view(static_cast<float*>(x.fin.get()), {B, H, K, V})});
      });
      LCSM_CUDA_CHECK(cudaStreamSynchronize(x.stream));
    });
  for (auto& t : threads) t.join();
  // Gather the outputs back in token order and compare.
  std::vector<double> got, want = fetch<E>(o.get(), B * T * H * V);
  got.resize(want.size());
  t0 = 0;
  for (int r = 0; r < R; ++r) {
    const auto part = fetch<E>(ranks[r].o.get(), B * slices[r] * H * V);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < slices[r] * H * V; ++i)
        got[(b * T + t0) * H * V + i] = part[b * slices[r] * H * V + i];
    t0 += slices[r];
  }
  const double out = rel_rms(got, want);
  const double st =
      rel_rms(fetch<float>(ranks[R - 1].fin.get(), B * H * K * V), fetch<float>(fin.get(), B * H * K * V));
  const bool ok = out <= (sizeof(E) == 4 ? 1e-4 : 8e-3) && st <= 1e-4;
  std::printf("nccl sequence parallel, %d rank(s), family %d, %s: outputs %.3g, final state %.3g: %s\n", R, family,
              sizeof(E) == 4 ? "fp32" : "bf16", out, st, ok ? "ok" : "OFF");
  for (auto& x : ranks) LCSM_CUDA_CHECK(cudaStreamDestroy(x.stream));
  return ok;
}

}  // namespace

int main() {
  int count = 0;
  LCSM_CUDA_CHECK(cudaGetDeviceCount(&count));
  std::vector<int> devices;
  for (int d = 0; d < count; ++d) devices.push_back(d);
  std::vector<ncclComm_t> comms(count);
  if (ncclCommInitAll(comms.data(), count, devices.data()) != ncclSuccess) {
    std::printf("ncclCommInitAll failed\n");
    return 1;
  }
  bool ok = true;
  for (int family = 0; family < 3; ++family) {
    ok = run_case<float>(family, comms, devices) && ok;
    ok = run_case<__nv_bfloat16>(family, comms, devices) && ok;
  }
  for (auto c : comms) ncclCommDestroy(c);
  return ok ? 0 : 1;
}
