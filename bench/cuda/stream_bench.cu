// The read ceiling of the chunked engine's access pattern (issue 11): one CTA per (segment, head)
// streams its head's 256-byte rows of k and v ([1, T, H, 128] bf16, rows H x 256 bytes apart), as
// the segment-delta pass does, against the same bytes read contiguously by the same number of CTAs.
// No lcsm kernel runs: if the strided pattern alone caps below the contiguous read, no loader (cp.async
// or TMA) can take the passes past that cap, and the work split has to change instead.
#include "common.cuh"

namespace {

using namespace lcsm_bench;

// kHeadRows: CTA (segment, head) = (blockIdx.x / H, blockIdx.x % H), as the engine orders its grid,
// reads rows [segment * rows, (segment + 1) * rows) of head `head` of k and v. Else CTA i reads the
// i-th contiguous slice of each tensor. kDepth 16-byte loads per tensor in flight per thread.
template <bool kHeadRows, int kDepth>
__global__ void __launch_bounds__(128)
    read_kernel(const uint4* k, const uint4* v, std::int64_t T, int H, int segments, unsigned* sink) {
  constexpr int kRowVecs = 16;  // 256 bytes: one head's row of 128 bf16
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t rows = T / segments;
  const std::int64_t seg = blockIdx.x / H, head = blockIdx.x % H;
  const uint4 *kb, *vb;
  std::int64_t row_step;
  if constexpr (kHeadRows) {
    kb = k + (seg * rows * H + head) * kRowVecs;
    vb = v + (seg * rows * H + head) * kRowVecs;
    row_step = static_cast<std::int64_t>(H) * kRowVecs;
  } else {
    kb = k + static_cast<std::int64_t>(blockIdx.x) * rows * kRowVecs;
    vb = v + static_cast<std::int64_t>(blockIdx.x) * rows * kRowVecs;
    row_step = kRowVecs;
  }
  unsigned acc = 0;
  const int col = tid % kRowVecs, r0 = tid / kRowVecs;  // 8 rows per pass of 128 threads
  for (std::int64_t r = r0; r < rows; r += 8 * kDepth) {
    uint4 a[kDepth], b[kDepth];
#pragma unroll
    for (int i = 0; i < kDepth; ++i) {
      const std::int64_t row = r + 8 * i;
      if (row < rows) {
        a[i] = __ldg(kb + row * row_step + col);
        b[i] = __ldg(vb + row * row_step + col);
      } else {
        a[i] = b[i] = make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int i = 0; i < kDepth; ++i) acc ^= a[i].x ^ a[i].w ^ b[i].y ^ b[i].z;
  }
  if (acc == 0x9E3779B9u) sink[blockIdx.x] = acc;  // keeps the loads
}

// Args: pattern (0 contiguous, 1 head rows), segments, T. H = 16, D = 128.
template <int kDepth>
void BM_read_ceiling(benchmark::State& state) {
  const bool head_rows = state.range(0) != 0;
  const int segments = static_cast<int>(state.range(1)), H = 16;
  const std::int64_t T = state.range(2), n = T * H * 128;
  Buffer k(n * 2), v(n * 2), sink(4096 * 4);
  const auto* kp = static_cast<const uint4*>(k.p);
  const auto* vp = static_cast<const uint4*>(v.p);
  const unsigned blocks = static_cast<unsigned>(segments * H);
  const double median = run_timed(state, [&] {
    if (head_rows) read_kernel<true, kDepth><<<blocks, 128>>>(kp, vp, T, H, segments, static_cast<unsigned*>(sink.p));
    else read_kernel<false, kDepth><<<blocks, 128>>>(kp, vp, T, H, segments, static_cast<unsigned*>(sink.p));
    LCSM_CUDA_CHECK(cudaGetLastError());
  });
  bandwidth_counters(state, median, 2.0 * n * 2 * (T / segments) * segments / T);
}

void read_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"head_rows", "segments", "T"});
  for (int pattern : {0, 1})
    for (int segments : {7, 8, 16}) b->Args({pattern, segments, 65536})->Args({pattern, segments, 1 << 20});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_TEMPLATE(BM_read_ceiling, 4)->Apply(read_shapes);
BENCHMARK_TEMPLATE(BM_read_ceiling, 16)->Apply(read_shapes);

}  // namespace
