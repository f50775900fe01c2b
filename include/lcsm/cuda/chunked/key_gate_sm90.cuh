// The vector gate on the sm_90a kernel (chunked/fwd_sm90.cuh): a warpgroup of its own *transforms*
// each chunk the producer has loaded, so that the consumers run lightning's products on decayed tiles.
// Per chunk of C = 64 tokens, with L_t the cumulative log2-gate of token t inside the chunk (per
// key, a compensated float pair as in key_gate_sm80.cuh) and T = L_{C-1}:
//   output launch   Q~ = q 2^L, K^ = k 2^-L  over q and k (hi), their lo terms over the gates
//                   P = mask(Q~ K^^T),  O = Q~ S + P V,  S = 2^T (.) (S + K^^T V)  (per key row)
//   delta launch    K~ = k 2^{T - L}         over k (hi), its lo term over the gates
//                   S = 2^T (.) S + K~^T V
// K^ carries 2^{-L}, which is safe only while |L| <= kKeyGateSeparable (2^64 at most, bf16 and
// float have the range; each product q 2^{L_t} k 2^{-L_s} keeps the relative rounding of the
// elementwise factor). The delta launch needs no such bound (every exponent <= 0). A chunk of the
// output launch beyond it ends the CTA's work: the transform sets the CTA's fallback flag
// (params.cuh) and the verdict word of the stage, the consumers and the producer stop (the
// producer once its copies in flight have landed), and the mma.sync kernel runs
// that CTA's whole segment again (launch.cuh), with its elementwise diagonal for steep chunks.
//
// In place: the thread of key k reads its gate, q and k of each row and writes the decayed values
// where it read them. The gates are loaded so that this works for the lo terms too: the four gates
// of keys 8j..8j+3 of row t lie where Q~'s lo tile keeps its 16-byte group (t, 8j), the gates of
// keys 8j+4..8j+7 where K^'s does; the eight threads of a key group swap their lo terms by shuffles,
// and each writes the one 32-bit word it read its gate from. (A prepared form without the shuffles,
// on two transform warpgroups: key_gate_halves_sm90.cuh.) Device code.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/tiles_sm90.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/barrier_sm90.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/exp2.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"

namespace lcsm::cuda::detail {

// The largest |L| (log2 units, any key and token of a chunk) the output launch runs.
constexpr float kKeyGateSeparable = 64.f;

// The consumers' decay policy under the vector gate: every factor is inside the operands.
struct KeyGateNoDecay {
  __device__ void prepare(const float* /*gates*/) {}
  __device__ float row(int /*i*/) const { return 1.f; }
  __device__ float key(int /*j*/, int /*c*/) const { return 1.f; }
  __device__ float mask(int /*i*/, int /*j*/) const { return 1.f; }
  __device__ float state(int /*c*/) const { return 1.f; }
};

// A barrier among `threads` threads (named barrier `id`) that returns whether x held for any.
__device__ __forceinline__ bool named_barrier_any(int id, int threads, bool x) {
  int any;
  asm volatile(
      "{\n.reg .pred in, out;\nsetp.ne.b32 in, %1, 0;\nbar.red.or.pred out, %2, %3, in;\nselp.b32 %0, 1, 0, out;\n}\n"
      : "=r"(any)
      : "r"(static_cast<int>(x)), "r"(id), "r"(threads)
      : "memory");
  return any != 0;
}

// L += g log2(e) as an unevaluated pair (hi, lo): each product's rounding error (TwoProduct by
// FMA, plus log2(e)'s own) and each addition's (TwoSum) go into lo; (h, l) the normalised sum.
// The __f*_rn intrinsics keep the compiler from contracting them into FMAs.
struct GateSum {
  float hi = 0.f, lo = 0.f, h = 0.f, l = 0.f;
  __device__ __forceinline__ void add(float g) {
    const float p = __fmul_rn(g, kLog2eHi);
    const float p_err = fmaf(g, kLog2eHi, -p) + g * kLog2eLo;
    const float s = __fadd_rn(hi, p), b = __fsub_rn(s, hi);
    const float s_err = __fadd_rn(__fsub_rn(hi, __fsub_rn(s, b)), __fsub_rn(p, b));
    hi = s, lo += s_err + p_err;
    h = __fadd_rn(hi, lo), l = __fsub_rn(lo, __fsub_rn(h, hi));
  }
};

// The transform of one landed stage by the thread of key `key` (the 128 threads of the transform
// warpgroup, in step: the shuffles). Returns whether its |L| stayed within kKeyGateSeparable (false for NaN);
// T = (total.x, total.y).
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ bool key_gate_transform(__nv_bfloat16* stage, int key, float2& total) {
  constexpr int C = Tr::kChunk;
  const float* gates = reinterpret_cast<const float*>(stage + Tr::kLoTiles);
  auto* words = reinterpret_cast<std::uint32_t*>(stage + Tr::kLoTiles);
  const int lane = static_cast<int>(threadIdx.x % 32), i = lane & 7;
  // The lo word this thread writes holds keys 2 (i mod 4) and + 1 of its group: Q~'s (low halves
  // of the pairs the threads hold) for i < 4, K^'s or K~'s (high halves) for i >= 4.
  const int from = (lane & ~7) + 2 * (i & 3);
  const std::uint32_t select = i < 4 ? 0x5410u : 0x7632u;
  GateSum L;
  float th = 0.f, tl = 0.f;
  // Eight rows at a time (a swizzle period): the block's loads first, then its math and stores.
  // Row by row, each row's stores into the tiles might alias the next row's loads for all the
  // compiler knows, and every row's whole latency (loads, exponentials, shuffles) would be exposed.
  constexpr int kRows = Tr::kTransformRows;
  if constexpr (kDeltaOnly) {  // T first: K~'s exponents are T - L
    for (int t0 = 0; t0 < C; t0 += kRows) {
      float g[kRows];
#pragma unroll
      for (int u = 0; u < kRows; ++u) g[u] = gates[key_gate_word<Tr>(t0 + u, key)];
#pragma unroll
      for (int u = 0; u < kRows; ++u) L.add(g[u]);
    }
    th = L.h, tl = L.l;
    L = GateSum{};
  }
  bool gentle = true;
  for (int t0 = 0; t0 < C; t0 += kRows) {
    float g[kRows], q[kRows], k[kRows];
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const int at = tile_offset<C>(t0 + u, key);
      g[u] = gates[key_gate_word<Tr>(t0 + u, key)];
      k[u] = __bfloat162float(stage[Tr::kQ + at]);
      q[u] = kDeltaOnly ? 0.f : __bfloat162float(stage[at]);
    }
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const int at = tile_offset<C>(t0 + u, key);
      L.add(g[u]);
      gentle = gentle && L.h >= -kKeyGateSeparable && L.h <= kKeyGateSeparable;
      float kx = k[u], q_lo = 0.f;
      if constexpr (kDeltaOnly) {
        kx *= exp2_pair(th - L.h, tl - L.l);
      } else {
        const float qx = q[u] * exp2_pair(L.h, L.l);
        kx *= exp2_pair(-L.h, -L.l);
        const __nv_bfloat16 q_hi = __float2bfloat16_rn(qx);
        stage[at] = q_hi;
        q_lo = qx - __bfloat162float(q_hi);
      }
      const __nv_bfloat16 k_hi = __float2bfloat16_rn(kx);
      stage[Tr::kQ + at] = k_hi;
      const std::uint32_t mine = pack_bf16(q_lo, kx - __bfloat162float(k_hi));
      const std::uint32_t a = __shfl_sync(0xffffffffu, mine, from), b = __shfl_sync(0xffffffffu, mine, from + 1);
      words[key_gate_word<Tr>(t0 + u, key)] = __byte_perm(a, b, select);
    }
  }
  total = kDeltaOnly ? make_float2(th, tl) : make_float2(L.h, L.l);
  return gentle;
}

// The transform warpgroup under the vector gate: each chunk once it has landed (the producer
// warpgroup loads them as for every decay, produce_chunks in tiles_sm90.cuh), announced on `ready`
// (the consumers wait there, not on `full`). At a steep chunk of the output launch it sets the
// CTA's fallback flag and the stage's verdict, and releases the stage in the consumers' place (they
// stop there): that is how the producer learns to stop loading.
template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void transform_key_gate_chunks(__nv_bfloat16* smem, std::uint64_t* full,
                                                          std::uint64_t* empty, std::uint64_t* ready,
                                                          const RecurrenceParams& p, const Item& it, int h,
                                                          std::int64_t item_index, int value_block) {
  constexpr int C = Tr::kChunk, S = Tr::kStages;
  const int key = static_cast<int>(threadIdx.x % 128);
  const std::int64_t chunks = (it.end - it.begin + C - 1) / C;
  double segment_log2 = 0;  // the delta launch's total log2-decay of this thread's key
  for (std::int64_t n = 0; n < chunks; ++n) {
    const int s = static_cast<int>(n % S);
    mbarrier_wait(&full[s], static_cast<std::uint32_t>((n / S) & 1));
    __nv_bfloat16* stage = smem + s * Tr::kStage;
    float2 total;
    const bool gentle = key_gate_transform<Tr, kDeltaOnly>(stage, key, total);
    reinterpret_cast<float*>(stage + Tr::kFactors)[key] = exp2_pair(total.x, total.y);
    if constexpr (kDeltaOnly) {
      segment_log2 += static_cast<double>(total.x) + static_cast<double>(total.y);
    } else {
      const bool steep = named_barrier_any(3, Tr::kTransformThreads, !gentle);
      if (key == 0) *reinterpret_cast<int*>(stage + Tr::kVerdict) = steep;
      if (steep) {
        if (key == 0) p.fallback_flags[blockIdx.x] = 1;
        mbarrier_arrive(&ready[s]);
        for (int c = 0; c < Tr::kConsumers; ++c) mbarrier_arrive(&empty[s]);  // counts a thread of each consumer
        return;
      }
    }
    fence_async_shared();  // the decayed tiles, written by this thread, seen by the wgmma reads
    mbarrier_arrive(&ready[s]);
  }
  if (kDeltaOnly && value_block == 0)
    p.segment_log_decay[(item_index * p.heads + h) * p.key_dim + key] = static_cast<float>(segment_log2);
}

}  // namespace lcsm::cuda::detail
