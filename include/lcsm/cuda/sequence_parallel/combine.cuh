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

// Whether rank q's block header says what this rank ran (the same kind, shapes and rank count).
__device__ __forceinline__ bool header_agrees(const unsigned char* block, const RankHeader& self, int q) {
  const RankHeader& h = *reinterpret_cast<const RankHeader*>(block);
  return h.magic == kHeaderMagic && h.decay == self.decay && h.batch == self.batch && h.heads == self.heads &&
         h.key_dim == self.key_dim && h.value_dim == self.value_dim && h.rank == q && h.ranks == self.ranks;
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
    agree = agree && header_agrees(block, self, q);
    if (q < self.rank) {
      const float g = reinterpret_cast<const float*>(block + layout.log2_offset)[nh * width + w];
      const float d = reinterpret_cast<const float*>(block + layout.delta_offset)[i];
      s = exp2f(g) * s + d;
    }
  }
  start[i] = agree ? s : __int_as_float(0x7fc00000);
}

// The backward's mirror image: the gradient with respect to the state at the end of this rank's
// slice, d_end = C_{rank+1} + E_{rank+1} (C_{rank+2} + E_{rank+2} (...)), with C_q rank q's state
// gradient at its start from its own tokens (the last rank's with the sequences' dS_final) and E_q
// its slice's decay (forward's log2-decays, `decays`), by X = E_q X + C_q from the last rank down.
// Headers of both gathers are checked as in combine_kernel.
template <int kUnused = 0>
__global__ void __launch_bounds__(kCombineThreads)
    combine_reverse_kernel(const unsigned char* decays, const unsigned char* grads, BlockLayout layout, RankHeader self,
                           int width, bool width_is_key, float* d_end) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= layout.state_elements) return;
  const std::int64_t kv = static_cast<std::int64_t>(self.key_dim) * self.value_dim;
  const std::int64_t nh = i / kv, e = i % kv;
  const int r = static_cast<int>(e / self.value_dim), c = static_cast<int>(e % self.value_dim);
  const int w = width == 1 ? 0 : (width_is_key ? r : c);
  bool agree = true;
  float x = 0.f;
  for (int q = self.ranks - 1; q >= 0; --q) {
    const unsigned char* db = decays + q * layout.bytes;
    const unsigned char* gb = grads + q * layout.bytes;
    agree = agree && header_agrees(db, self, q) && header_agrees(gb, self, q);
    if (q > self.rank) {
      const float g = reinterpret_cast<const float*>(db + layout.log2_offset)[nh * width + w];
      x = exp2f(g) * x + reinterpret_cast<const float*>(gb + layout.delta_offset)[i];
    }
  }
  d_end[i] = agree ? x : __int_as_float(0x7fc00000);
}

// out[h] = sum over ranks q (in order) of the gathered partial sums parts[q][h] (lightning's
// d_log_decay: each rank's tokens' share), at `offset` bytes into each block.
template <int kUnused = 0>
__global__ void sum_ranks_kernel(const unsigned char* gathered, std::size_t block_bytes, std::size_t offset, int ranks,
                                 int count, float* out, std::int64_t stride) {
  const int h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= count) return;
  double sum = 0;
  for (int q = 0; q < ranks; ++q) sum += reinterpret_cast<const float*>(gathered + q * block_bytes + offset)[h];
  out[h * stride] = static_cast<float>(sum);
}

}  // namespace lcsm::cuda::sequence_parallel::detail
