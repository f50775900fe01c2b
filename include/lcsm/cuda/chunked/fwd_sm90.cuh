// The chunked forward on Hopper warpgroup MMAs (sm_90a): bf16 inputs, K <= 128, the per-head and
// the scalar-gate decays, 128 value columns per CTA in two warpgroups of 64 columns each. The
// warpgroups share the chunk's tiles (loaded once) and each computes the scores it needs itself
// (Q K^T twice: cheaper than a trip of P through shared memory and a barrier).
//
// Per chunk of C = 64 tokens (S: the K x 64 state block at the chunk start; factors from the decay
// policy, chunked/decay.cuh):
//   P   = Q K^T (.) D               m64n64,  A = Q, B = K                 (shared memory)
//   O   = diag(exp(G_i)) Q S        m64n64,  A = Q, B = S (bf16 hi, lo)   (shared memory)
//       + P V                       m64n64,  A = P (registers), B = V (MN-major)
//   S^T = exp(G_{c-1}) S^T + (V^T diag(exp(G_{c-1} - G_j))) K
//                                   m64n128, A = decayed V^T (registers), B = K (MN-major)
// The state lives in registers as the accumulator of its update, transposed (value rows, key
// columns), and goes to shared memory once per chunk as the B operand of Q S; the scores go from
// accumulator to A fragment without leaving registers. In exact mode the state, the scores and the
// decayed values keep a lo bf16 term (products hi * x + lo * x), as in the mma.sync kernel
// (chunked/fwd_sm80.cuh), which serves every other shape, type and the vector gate. Segments,
// their delta launch and the scan are shared with it.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/mma_sm80.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"
#include "lcsm/cuda/primitives/wgmma_sm90.cuh"

namespace lcsm::cuda::detail {

template <bool kExact, DecayKind kDecay>
struct Sm90Traits {
  static_assert(kDecay != DecayKind::key, "the vector gate runs on the mma.sync kernel");
  static constexpr bool kTokenGate = kDecay == DecayKind::token;
  // kValues per warpgroup, kValueTile per CTA.
  static constexpr int kChunk = 64, kKeys = 128, kValues = 64, kValueTile = 128, kThreads = 256;
  // Blocked tiles (wgmma_sm90.cuh), bf16 elements; a stage ends with the chunk's gates (floats).
  static constexpr int kQ = kChunk * kKeys, kK = kChunk * kKeys, kV = kChunk * kValueTile;
  static constexpr int kStageTiles = kQ + kK + kV;
  static constexpr int kStage = kStageTiles + (kTokenGate ? 2 * kChunk : 0);
  static constexpr int kStages = 2;
  static constexpr int kS = kValueTile * kKeys;  // the state operand, [value][key], hi (and lo)
  static constexpr int kOffS = kStages * kStage;
  static constexpr int kOffO = kOffS + (kExact ? 2 : 1) * kS;          // output staging [token][value], swizzled
  static constexpr int kOffDecay = (kOffO + kChunk * kValueTile) * 2;  // bytes: lambda^p, or per-warp gate scans
  static constexpr int kSmemBytes = kOffDecay + (kTokenGate ? (kThreads / 32) * kChunk * 8 : (kChunk + 1) * 4);
};

// Element offset of (r, c) in a blocked tile of `cols` columns.
__device__ __forceinline__ int blocked(int r, int c, int cols) {
  return (r >> 3) * (cols << 3) + (c >> 3) * 64 + (r & 7) * 8 + (c & 7);
}

// Rows [t0, t0 + kRows) x columns [c0, c0 + kCols) of one head into a blocked tile by 16-byte
// cp.async; rows >= count and columns >= dim are zero. Consecutive threads fill one core matrix;
// a thread's column is the same in every pass and its row advances by a fixed step, so one base
// pointer serves all its copies.
template <int kRows, int kCols>
__device__ __forceinline__ void load_blocked(__nv_bfloat16* tile, const __nv_bfloat16* head, std::int64_t row_stride,
                                             std::int64_t t0, int count, int c0, int dim) {
  constexpr int kThreads = 256;
  constexpr int kColBlocks = kCols / 8, kPasses = kRows * kColBlocks / kThreads;
  constexpr int kRowStep = kThreads / kColBlocks;  // rows between a thread's passes
  const int tid = static_cast<int>(threadIdx.x);
  const int cb = (tid >> 3) % kColBlocks, r0 = (tid & 7) + (tid / (8 * kColBlocks)) * 8;
  const int col = c0 + cb * 8;
  __nv_bfloat16* dst = tile + blocked(r0, cb * 8, kCols);
  const __nv_bfloat16* src = head + (t0 + r0) * row_stride + col;
  const std::int64_t step = kRowStep * row_stride;
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    __nv_bfloat16* d = dst + i * (kRowStep / 8) * kCols * 8;
    if (r0 + i * kRowStep < count && col < dim) cp_async_16(d, src + i * step);
    else *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
  }
}

template <class Tr, bool kDeltaOnly>
__device__ __forceinline__ void load_wgmma_chunk(__nv_bfloat16* stage, const RecurrenceParams& p, const Item& it,
                                                 std::int64_t tg, int c, int h, int c0) {
  const std::int64_t h64 = h;
  const auto* q = static_cast<const __nv_bfloat16*>(p.q) + it.batch * p.sq.s0 + h64 * p.sq.s2;
  const auto* k = static_cast<const __nv_bfloat16*>(p.k) + it.batch * p.sk.s0 + h64 * p.sk.s2;
  const auto* v = static_cast<const __nv_bfloat16*>(p.v) + it.batch * p.sv.s0 + h64 * p.sv.s2;
  if (!kDeltaOnly) load_blocked<Tr::kChunk, Tr::kKeys>(stage, q, p.sq.s1, tg, c, 0, p.key_dim);
  load_blocked<Tr::kChunk, Tr::kKeys>(stage + Tr::kQ, k, p.sk.s1, tg, c, 0, p.key_dim);
  load_blocked<Tr::kChunk, Tr::kValueTile>(stage + Tr::kQ + Tr::kK, v, p.sv.s1, tg, c, c0, p.value_dim);
  if constexpr (Tr::kTokenGate)
    load_token_gates<Tr::kChunk, Tr::kThreads>(reinterpret_cast<float*>(stage + Tr::kStageTiles), p, it.batch, tg, c,
                                               h);
  cp_async_commit();
}

// Accumulator element i of a thread: row and column inside the warpgroup's m64nN tile.
__device__ __forceinline__ int acc_row(int i) {
  return static_cast<int>(threadIdx.x / 32 % 4) * 16 + static_cast<int>(threadIdx.x % 32) / 4 + ((i >> 1) & 1) * 8;
}
__device__ __forceinline__ int acc_col(int i) {
  return (i >> 2) * 8 + 2 * (static_cast<int>(threadIdx.x) % 4) + (i & 1);
}

// The state S^T (value rows, key columns) <-> global [K, V] fp32 (absent: zero).
__device__ __forceinline__ void state_t_from_global(float (&s)[64], const float* g, const Strides4& st, std::int64_t n,
                                                    int h, int c0, int K, int V) {
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int v = c0 + acc_row(i), d = acc_col(i);
    s[i] = (g && v < V && d < K) ? g[n * st.s0 + h * st.s1 + d * st.s2 + v * st.s3] : 0.f;
  }
}
__device__ __forceinline__ void state_t_to_global(const float (&s)[64], float* g, const Strides4& st, std::int64_t n,
                                                  int h, int c0, int K, int V) {
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int v = c0 + acc_row(i), d = acc_col(i);
    if (v < V && d < K) g[n * st.s0 + h * st.s1 + d * st.s2 + v * st.s3] = s[i];
  }
}

template <DecayKind kDecay, bool kExact, bool kDeltaOnly>
__global__ void __launch_bounds__(256, 1) chunk_kernel_sm90(const __grid_constant__ RecurrenceParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tr = Sm90Traits<kExact, kDecay>;
  constexpr int C = Tr::kChunk;
  extern __shared__ __align__(128) unsigned char wgmma_smem[];
  auto* smem = reinterpret_cast<__nv_bfloat16*>(wgmma_smem);
  __nv_bfloat16* sO = smem + Tr::kOffO;

  const BlockCoords bc = block_coords(p);
  const std::int64_t item_index = bc.item;
  Item it;
  if (!decode_item(p, item_index, it)) return;
  const bool last_segment = it.segment + 1 >= it.segments;
  if (kDeltaOnly && last_segment) return;

  const int wg = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32, h = bc.head;
  const int K = p.key_dim, V = p.value_dim, tile_c0 = bc.value_block * Tr::kValueTile, c0 = tile_c0 + wg * Tr::kValues;
  auto decay = [&] {
    if constexpr (Tr::kTokenGate)
      return TokenDecay<C>::make(reinterpret_cast<float2*>(wgmma_smem + Tr::kOffDecay) + (threadIdx.x / 32) * C);
    else return HeadDecay::make<C>(p, h, reinterpret_cast<float*>(wgmma_smem + Tr::kOffDecay));
  }();
  double segment_log2 = 0;  // the segment's total log2-decay (scalar gate)

  // This warpgroup's rows of the state operand (hi; lo kS further).
  __nv_bfloat16* sSh = smem + Tr::kOffS + wg * Tr::kValues * Tr::kKeys;
  __nv_bfloat16* sSl = sSh + Tr::kS;  // exact only
  float S[64];                        // S^T: value rows c0 + acc_row(i), key columns acc_col(i)
  const Strides4 ws{static_cast<std::int64_t>(p.heads) * K * V, static_cast<std::int64_t>(K) * V, V, 1};
  if (!kDeltaOnly && p.segment_states) state_t_from_global(S, p.segment_states, ws, item_index, h, c0, K, V);
  else if (!kDeltaOnly && p.initial_state) state_t_from_global(S, p.initial_state, p.s_initial, it.seq, h, c0, K, V);
  else state_t_from_global(S, nullptr, p.s_initial, 0, 0, c0, K, V);

  // The state as the B operand of Q S: [value][key] blocked, bf16 hi (and lo).
  // Accumulator element i sits at blocked(acc_row(i), acc_col(i), cols) = a per-thread base plus
  // a compile-time offset: written that way so that no per-element address stays live.
  const int fragment_base = warp * 16 * 8 + (lane / 4) * 8 + 2 * (lane % 4);  // times cols / 8 for row blocks
  auto state_to_tile = [&] {
    __nv_bfloat16* hi_base = sSh + (fragment_base / 128) * 2 * Tr::kKeys * 8 + fragment_base % 128;
#pragma unroll
    for (int i = 0; i < 64; i += 2) {
      std::uint32_t hi, lo;
      split_pack_bf16(S[i], S[i + 1], hi, lo);
      const int off = ((i >> 1) & 1) * Tr::kKeys * 8 + (i >> 2) * 64;
      *reinterpret_cast<std::uint32_t*>(hi_base + off) = hi;
      if constexpr (kExact) *reinterpret_cast<std::uint32_t*>(hi_base + Tr::kS + off) = lo;
    }
  };
  if (!kDeltaOnly) state_to_tile();

  auto* o = static_cast<__nv_bfloat16*>(p.o);
  int stage = 0;
  if (it.begin < it.end) {
    const std::int64_t c = it.end - it.begin < C ? it.end - it.begin : C;
    load_wgmma_chunk<Tr, kDeltaOnly>(smem, p, it, it.start + it.begin, static_cast<int>(c), h, tile_c0);
  }

  for (std::int64_t t = it.begin; t < it.end; t += C) {
    const int c = static_cast<int>(it.end - t < C ? it.end - t : C);
    const std::int64_t tg = it.start + t;
    __nv_bfloat16* sQ = smem + stage * Tr::kStage;
    __nv_bfloat16* sK = sQ + Tr::kQ;
    __nv_bfloat16* sV = sK + Tr::kK;
    cp_async_wait<0>();
    fence_async_shared();
    __syncthreads();  // this chunk's tiles and the state operand visible to all (and to wgmma)
    if constexpr (Tr::kTokenGate) {
      decay.prepare(reinterpret_cast<const float*>(sQ + Tr::kStageTiles));
      segment_log2 += decay.chunk_log2;
    }
    if (t + C < it.end) {  // the next chunk's loads, into the stage the previous chunk released
      const std::int64_t cn = it.end - t - C < C ? it.end - t - C : C;
      load_wgmma_chunk<Tr, kDeltaOnly>(smem + (stage ^ 1) * Tr::kStage, p, it, tg + C, static_cast<int>(cn), h,
                                       tile_c0);
    }

    // ---- S^T = exp(G_{c-1}) S^T + (V^T diag(exp(G_{c-1} - G_j))) K, issued first: it reads the
    // tiles and the registers only, while Q S below reads the previous state from its shared-memory
    // copy. ----
    {
      const float lc = decay.state(c);
#pragma unroll
      for (int i = 0; i < 64; ++i) S[i] *= lc;
      std::uint32_t vh[4][4], vl[kExact ? 4 : 1][4];
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk) {
        // Matrices: (values 16w..+7, tokens 16kk..+7), (values +8, same tokens), (values, tokens +8), (+8, +8).
        const int m = lane / 8, jb = 2 * kk + (m >> 1), vblk = wg * 8 + 2 * warp + (m & 1);
        std::uint32_t x[4];
        ldmatrix_x4_trans(x, sV + jb * 8 * Tr::kValueTile + vblk * 64 + (lane % 8) * 8);
        const int j0 = kk * 16 + 2 * (lane % 4);
        const float w0 = decay.key(j0, c), w1 = decay.key(j0 + 1, c);
        const float w8 = decay.key(j0 + 8, c), w9 = decay.key(j0 + 9, c);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float2 f = unpack_bf16(x[r]);
          std::uint32_t hi, lo;
          split_pack_bf16(f.x * (r < 2 ? w0 : w8), f.y * (r < 2 ? w1 : w9), hi, lo);
          vh[kk][r] = hi;
          if constexpr (kExact) vl[kk][r] = lo;
        }
      }
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk)
        wgmma_split_rs<kExact, 1>(S, vh[kk], vl[kExact ? kk : 0],
                                  wgmma_descriptor(sK + kk * 2 * 8 * Tr::kKeys, Tr::kKeys * 16, 128));
      wgmma_commit();
    }

    float O[32];  // rows: tokens acc_row(i); columns: values c0 + acc_col(i)
    if (!kDeltaOnly) {
      // ---- P = Q K^T and O = Q S, issued behind the state update. ----
      float A[32];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < Tr::kKeys / 16; ++kk)
        wgmma_m64n64k16_ss<0, 0>(A, wgmma_descriptor(sQ + kk * 128, 128, Tr::kKeys * 16),
                                 wgmma_descriptor(sK + kk * 128, 128, Tr::kKeys * 16), kk > 0);
      wgmma_commit();
#pragma unroll
      for (int kk = 0; kk < Tr::kKeys / 16; ++kk)
        wgmma_split_ss<kExact>(O, wgmma_descriptor(sQ + kk * 128, 128, Tr::kKeys * 16),
                               wgmma_descriptor(sSh + kk * 128, 128, Tr::kKeys * 16),
                               wgmma_descriptor(sSl + kk * 128, 128, Tr::kKeys * 16), kk > 0);
      wgmma_commit();
      wgmma_wait<1>();  // the state update and P
      // Causal decay mask as a select; the accumulator becomes P's A fragments (hi, lo).
      std::uint32_t ph[4][4], pl[kExact ? 4 : 1][4];
      // Element i: row r0 + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2 (lane % 4) + (i & 1), so the
      // distance row - column is d0 plus a compile-time constant.
      const int d0 = warp * 16 + lane / 4 - 2 * (lane % 4);
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int i = 8 * kk + 2 * r, d = d0 + 8 * ((i >> 1) & 1) - 8 * (i >> 2);
          const int row = warp * 16 + lane / 4 + 8 * ((i >> 1) & 1), col = row - d;
          const float x0 = d >= 0 ? A[i] * decay.mask(row, col) : 0.f;
          const float x1 = d >= 1 ? A[i + 1] * decay.mask(row, col + 1) : 0.f;
          std::uint32_t hi, lo;
          split_pack_bf16(x0, x1, hi, lo);
          ph[kk][r] = hi;
          if constexpr (kExact) pl[kk][r] = lo;
        }
      wgmma_wait<0>();                      // Q S
      if (t + C < it.end) state_to_tile();  // the next chunk's operand: Q S no longer reads the tile
      const float q_decay_top = decay.row(warp * 16 + lane / 4), q_decay_bottom = decay.row(warp * 16 + lane / 4 + 8);
#pragma unroll
      for (int i = 0; i < 32; ++i) O[i] *= (i & 2) ? q_decay_bottom : q_decay_top;  // lambda^(i+1), i the token
      // ---- O += P V. ----
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk)
        wgmma_split_rs<kExact, 1>(
            O, ph[kk], pl[kExact ? kk : 0],
            wgmma_descriptor(sV + kk * 2 * 8 * Tr::kValueTile + wg * 8 * 64, Tr::kValueTile * 16, 128));
      wgmma_commit();
    }
    wgmma_wait<0>();

    if (!kDeltaOnly) {
      // Outputs: scaled, staged as [token][value] bf16 (16-byte groups XOR-swizzled by the row, so
      // that neither the fragment writes nor the row reads conflict), then 16-byte row segments.
      const int r0 = warp * 16 + lane / 4;
#pragma unroll
      for (int i = 0; i < 32; i += 2) {
        const int row = r0 + ((i >> 1) & 1) * 8, col = wg * Tr::kValues + (i >> 2) * 8 + 2 * (lane % 4);
        *reinterpret_cast<__nv_bfloat162*>(sO + row * Tr::kValueTile + (((col >> 3) ^ (row & 7)) << 3) + (col & 7)) =
            __floats2bfloat162_rn(p.scale * O[i], p.scale * O[i + 1]);
      }
      __syncthreads();
      __nv_bfloat16* head = o + it.batch * p.so.s0 + static_cast<std::int64_t>(h) * p.so.s2;
      constexpr int kGroups = Tr::kValueTile / 8;
#pragma unroll
      for (int i = 0; i < C * kGroups / Tr::kThreads; ++i) {
        const int gi = threadIdx.x + i * Tr::kThreads;
        const int row = gi / kGroups, cb = gi % kGroups, col = tile_c0 + cb * 8;
        if (row < c && col < V)
          *reinterpret_cast<uint4*>(head + (tg + row) * p.so.s1 + col) =
              *reinterpret_cast<const uint4*>(sO + row * Tr::kValueTile + ((cb ^ (row & 7)) << 3));
      }
    }
    stage ^= 1;
  }

  if (kDeltaOnly) {
    state_t_to_global(S, p.segment_states, ws, item_index + 1, h, c0, K, V);
    if constexpr (Tr::kTokenGate)
      if (bc.value_block == 0 && threadIdx.x == 0)
        p.segment_log_decay[item_index * p.heads + h] = static_cast<float>(segment_log2);
  } else if (last_segment && p.final_state) {
    state_t_to_global(S, p.final_state, p.s_final, it.seq, h, c0, K, V);
  }
#else
  // Built for a target without sm_90a's wgmma: the host never launches this body (it checks for
  // this marker's static shared memory, see sm90_kernels_available in chunked/launch.cuh).
  __shared__ int no_wgmma_marker[1];
  no_wgmma_marker[0] = p.heads;
  __syncthreads();
  if (no_wgmma_marker[0] < 0) *static_cast<int*>(p.o) = 0;  // never: keeps the marker alive
#endif
}

}  // namespace lcsm::cuda::detail
