// Sequence parallelism's small kernels: each rank's gathered block starts with a header (what the
// rank ran: decay kind, shapes, rank, ranks), then its slice's state contribution and total
// log2-decay; every rank folds the blocks of the ranks before it into its start state. Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/params.cuh"

namespace lcsm::cuda::sequence_parallel::detail {

constexpr int kCombineThreads = 256;
constexpr std::int32_t kHeaderMagic = 0x6c63736d;  // "lcsm"

struct RankHeader {
  std::int32_t magic, decay, batch, heads, key_dim, value_dim, rank, ranks;
};

// Where a rank's block keeps its parts (bytes from the block's start).
struct BlockLayout {
  std::size_t delta_offset, log2_offset, bytes;
  std::int64_t state_elements, log2_elements;  // N H K V, N H width
};

template <int kUnused = 0>
__global__ void write_header_kernel(RankHeader h, RankHeader* dst) {
  if (threadIdx.x == 0 && blockIdx.x == 0) *dst = h;
}

// start[n, h, r, c] = sum over q < rank of (prod over q < p < rank of e^{G_p}) delta_q, by the
// recurrence S = e^{G_q} S + delta_q (G per (n, h) or per key row / value column: width entries);
// rank 0's start is the caller's initial state (zero when absent), which its delta already carries.
// A rank whose header disagrees with this rank's (another decay kind, shape or rank count, or a
// rank number out of place) makes the start state NaN: the disagreement reaches the outputs.
template <int kUnused = 0>
__global__ void __launch_bounds__(kCombineThreads)
    combine_kernel(const unsigned char* recv, BlockLayout layout, RankHeader self, int width, bool width_is_key,
                   const float* initial, lcsm::cuda::detail::Strides4 si, float* start) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= layout.state_elements) return;
  const std::int64_t kv = static_cast<std::int64_t>(self.key_dim) * self.value_dim;
  const std::int64_t nh = i / kv, e = i % kv;
  const int r = static_cast<int>(e / self.value_dim), c = static_cast<int>(e % self.value_dim);
  const int w = width == 1 ? 0 : (width_is_key ? r : c);
  bool agree = true;
  float s = 0.f;
  if (self.rank == 0 && initial) {
    const std::int64_t n = nh / self.heads, hh = nh % self.heads;
    s = initial[n * si.s0 + hh * si.s1 + r * si.s2 + c * si.s3];
  }
  for (int q = 0; q < self.ranks; ++q) {
    const unsigned char* block = recv + q * layout.bytes;
    const RankHeader& h = *reinterpret_cast<const RankHeader*>(block);
    agree = agree && h.magic == kHeaderMagic && h.decay == self.decay && h.batch == self.batch &&
            h.heads == self.heads && h.key_dim == self.key_dim && h.value_dim == self.value_dim && h.rank == q &&
            h.ranks == self.ranks;
    if (q < self.rank) {
      const float g = reinterpret_cast<const float*>(block + layout.log2_offset)[nh * width + w];
      const float d = reinterpret_cast<const float*>(block + layout.delta_offset)[i];
      s = exp2f(g) * s + d;
    }
  }
  start[i] = agree ? s : __int_as_float(0x7fc00000);
}

}  // namespace lcsm::cuda::sequence_parallel::detail
