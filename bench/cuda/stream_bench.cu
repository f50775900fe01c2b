// The read ceilings of the chunked engine's access pattern (issue 11): one CTA per (segment, head)
// streams its head's 256-byte rows of k and v ([1, T, H, 128] bf16, rows H x 256 bytes apart), as
// the segment-delta pass does. BM_read_ceiling: plain loads into registers, against the same bytes
// read contiguously by the same number of CTAs (if the strided pattern alone caps below the
// contiguous read, no loader can take the passes past that cap). BM_loader_ceiling: the sm_90a
// kernel's producer warpgroup and shared-memory ring with the consumers reduced to a touch, filled
// by either of the engine's loaders (tiles_sm90.cuh: cp.async, or the TMA tile maps): how fast the
// loads alone can go. The first run (docs/performance.md, 2026-12-07) also had the blocked layout's
// 5-D map and cp.async (60% of the copy bandwidth) and 1-D bulk copies of rows (32-37%); the
// swizzled layout they chose between is now the only one.
#include "common.cuh"
#include "lcsm/cuda/chunked/tiles_sm90.cuh"

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

enum Loader { kCpAsyncTiles, kTensorMapTiles };
constexpr int kRingStages = 6, kRingRows = 64, kRingTile = kRingRows * 128;  // bf16 elements per tile
constexpr int kRingSmem = kRingStages * 2 * kRingTile * 2 + 2 * kRingStages * 8;

// Producer warpgroup 0 fills stage n % kRingStages with chunk n's k and v tiles (64 rows each) once
// consumer warpgroup 1 has released it; the consumer waits for each stage, reads a word a thread
// and releases it.
template <int kLoader>
__global__ void __launch_bounds__(256, 1)
    ring_kernel(const __nv_bfloat16* k, const __nv_bfloat16* v, std::int64_t T, int H, int segments,
                const __grid_constant__ lcsm::cuda::detail::TileMaps maps, unsigned* sink) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  namespace d = lcsm::cuda::detail;
  extern __shared__ __align__(1024) unsigned char ring_smem[];  // the 128-byte swizzle wants 1 KB
  auto* tiles = reinterpret_cast<__nv_bfloat16*>(ring_smem);
  auto* full = reinterpret_cast<std::uint64_t*>(ring_smem + kRingStages * 2 * kRingTile * 2);
  std::uint64_t* empty = full + kRingStages;
  const int tid = static_cast<int>(threadIdx.x), h = static_cast<int>(blockIdx.x % H);
  const std::int64_t rows = T / segments, t_begin = blockIdx.x / H * rows, chunks = rows / kRingRows;
  if (tid == 0) {
    for (int s = 0; s < kRingStages; ++s) d::mbarrier_init(&full[s], 128), d::mbarrier_init(&empty[s], 128);
    d::mbarrier_init_fence();
  }
  __syncthreads();
  const std::int64_t row_stride = static_cast<std::int64_t>(H) * 128;
  if (tid < 128) {
    for (std::int64_t n = 0; n < chunks; ++n) {
      const int s = static_cast<int>(n % kRingStages), round = static_cast<int>(n / kRingStages);
      if (round > 0) d::mbarrier_wait(&empty[s], (round - 1) & 1);
      __nv_bfloat16* stage = tiles + s * 2 * kRingTile;
      const std::int64_t tg = t_begin + n * kRingRows;
      if constexpr (kLoader == kCpAsyncTiles) {
        d::load_swizzled<kRingRows, 128, 128>(stage, k + h * 128, row_stride, tg, kRingRows, 0, 128, tid);
        d::load_swizzled<kRingRows, 128, 128>(stage + kRingTile, v + h * 128, row_stride, tg, kRingRows, 0, 128, tid);
        d::mbarrier_arrive_on_copies(&full[s]);
      } else if (tid == 0) {
        d::mbarrier_arrive_expect_tx(&full[s], 2 * kRingTile * 2);
        d::tma_tile<kRingRows, 128>(stage, &maps.k, h * 128, tg, 0, &full[s]);
        d::tma_tile<kRingRows, 128>(stage + kRingTile, &maps.v, h * 128, tg, 0, &full[s]);
      } else {
        d::mbarrier_arrive(&full[s]);
      }
    }
    return;
  }
  unsigned acc = 0;
  for (std::int64_t n = 0; n < chunks; ++n) {
    const int s = static_cast<int>(n % kRingStages);
    d::mbarrier_wait(&full[s], static_cast<std::uint32_t>(n / kRingStages) & 1);
    acc ^= reinterpret_cast<const unsigned*>(tiles + s * 2 * kRingTile)[(tid - 128) * 64 + static_cast<int>(n % 64)];
    d::mbarrier_arrive(&empty[s]);
  }
  if (acc == 0x9E3779B9u) sink[blockIdx.x] = acc;
#endif
}

// Args: segments, T. H = 16, D = 128.
template <int kLoader>
void BM_loader_ceiling(benchmark::State& state) {
  namespace d = lcsm::cuda::detail;
  const int segments = static_cast<int>(state.range(0)), H = 16;
  const std::int64_t T = state.range(1), n = T * H * 128;
  Buffer k(n * 2), v(n * 2), sink(4096 * 4);
  d::TileMaps maps{};
  const d::Strides4 strides{n, H * 128, 128, 1};
  if (kLoader == kTensorMapTiles &&
      !(d::tile_map(maps.k, k.p, strides, 1, T, H, 128) && d::tile_map(maps.v, v.p, strides, 1, T, H, 128))) {
    state.SkipWithError("the driver refuses the tile map");
    return;
  }
  LCSM_CUDA_CHECK(cudaFuncSetAttribute(ring_kernel<kLoader>, cudaFuncAttributeMaxDynamicSharedMemorySize, kRingSmem));
  const auto* kp = static_cast<const __nv_bfloat16*>(k.p);
  const auto* vp = static_cast<const __nv_bfloat16*>(v.p);
  const double median = run_timed(state, [&] {
    ring_kernel<kLoader>
        <<<segments * H, 256, kRingSmem>>>(kp, vp, T, H, segments, maps, static_cast<unsigned*>(sink.p));
    LCSM_CUDA_CHECK(cudaGetLastError());
  });
  const double rows = static_cast<double>(T / segments / kRingRows * kRingRows * segments);
  bandwidth_counters(state, median, 2.0 * rows * H * 256);
}

void loader_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"segments", "T"});
  for (int segments : {7, 8}) b->Args({segments, 65536})->Args({segments, 1 << 20});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_TEMPLATE(BM_loader_ceiling, kCpAsyncTiles)->Name("BM_loader_ceiling/cp_async")->Apply(loader_shapes);
BENCHMARK_TEMPLATE(BM_loader_ceiling, kTensorMapTiles)->Name("BM_loader_ceiling/tensor_map")->Apply(loader_shapes);

}  // namespace
