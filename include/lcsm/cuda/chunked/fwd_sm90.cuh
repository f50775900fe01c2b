// The chunked forward on Hopper warpgroup MMAs (sm_90a): bf16 inputs, K <= 128, the per-head and
// the scalar-gate decays, 128 value columns per CTA. Warp-specialised: a producer warpgroup loads
// the chunks' tiles (TMA tensor copies; cp.async for partial chunks) into a ring of stages (an
// mbarrier per stage says full, another says empty), and two consumer warpgroups of 64 value
// columns each run the chunks. The consumers share the tiles and each computes the scores it needs
// itself (Q K^T twice: cheaper than a trip of P through shared memory), and nothing makes them
// wait for each other: no CTA-wide barrier in the loop, so one consumer's matrix products overlap
// the other's masking, conversions and stores, and the loads run up to kStages chunks ahead.
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
// their delta launch and the scan are shared with it. Tile layout, loads and the producer:
// chunked/tiles_sm90.cuh.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/chunked/key_gate_halves_sm90.cuh"
#include "lcsm/cuda/chunked/key_gate_sm90.cuh"
#include "lcsm/cuda/chunked/params.cuh"
#include "lcsm/cuda/chunked/row_dots_sm90.cuh"
#include "lcsm/cuda/chunked/tiles_sm90.cuh"
#include "lcsm/cuda/chunked/traits_sm90.cuh"
#include "lcsm/cuda/chunked/work.cuh"
#include "lcsm/cuda/primitives/barrier_sm90.cuh"
#include "lcsm/cuda/primitives/copy.cuh"
#include "lcsm/cuda/primitives/mma_sm80.cuh"
#include "lcsm/cuda/primitives/split_bf16.cuh"
#include "lcsm/cuda/primitives/wgmma_sm90.cuh"

namespace lcsm::cuda::detail {

// kRowDots: the backward's dq and dk passes, whose epilogue also sums each output row times a row
// of q or k (chunked/row_dots.cuh); an instance of its own, so that the forward's registers do not
// pay for it.
template <DecayKind kDecay, bool kExact, bool kDeltaOnly, bool kRowDots = false>
__global__ void __launch_bounds__(Sm90Traits<kExact, kDecay>::kThreads, 1)
    chunk_kernel_sm90(const __grid_constant__ RecurrenceParams p, const __grid_constant__ TileMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tr = Sm90Traits<kExact, kDecay, kDeltaOnly>;
  constexpr int C = Tr::kChunk;
  extern __shared__ __align__(1024) unsigned char wgmma_smem[];
  auto* smem = reinterpret_cast<__nv_bfloat16*>(wgmma_smem);
  auto* full = reinterpret_cast<std::uint64_t*>(wgmma_smem + Tr::kOffBarriers);
  std::uint64_t* empty = full + Tr::kStages;
  std::uint64_t* ready = empty + Tr::kStages;  // the vector gate's transformed stages

  // The vector gate's output launch: this CTA's fallback flag, set again if it stops (key_gate_sm90.cuh).
  if (Tr::kKeyGate && !kDeltaOnly && threadIdx.x == 0) p.fallback_flags[blockIdx.x] = 0;
  const BlockCoords bc = block_coords(p);
  const std::int64_t item_index = bc.item;
  Item it;
  if (!decode_item(p, item_index, it)) return;
  const bool last_segment = it.segment + 1 >= it.segments;
  if (kDeltaOnly && last_segment && !p.last_delta) return;  // needed by sequence parallelism only

  const int wg = threadIdx.x / 128, h = bc.head, tile_c0 = bc.value_block * Tr::kValueTile;
  auto decay = [&] {
    if constexpr (Tr::kTokenGate)
      return TokenDecay<C>::make(reinterpret_cast<float4*>(wgmma_smem + Tr::kOffDecay) +
                                 (threadIdx.x < 128 ? 0 : threadIdx.x / 32 - 4 * Tr::kProducerGroups) * C);
    else if constexpr (Tr::kKeyGate) return KeyGateNoDecay{};
    else return HeadDecay::make<C>(p, h, reinterpret_cast<float*>(wgmma_smem + Tr::kOffDecay));
  }();
  if (threadIdx.x == 0) {
    // Swizzled tiles take their pattern's phase from the address: a base off 1 KB would shift it.
    if (smem_address(wgmma_smem) & 1023) __trap();
    for (int s = 0; s < Tr::kStages; ++s) {
      mbarrier_init(&full[s], 2 * Tr::kProducerThreads);
      mbarrier_init(&empty[s], Tr::kConsumers * 128);
      if (Tr::kKeyGate) mbarrier_init(&ready[s], Tr::kTransformThreads);
    }
    mbarrier_init_fence();
  }
  __syncthreads();  // the barriers and the lambda^p table; the only CTA-wide barrier

  // Register budgets: the launch gives each thread 64K / kThreads (168 or 128).
  constexpr int kLaunchRegisters = 65536 / Tr::kThreads / 8 * 8;
  if (wg == 0 && !Tr::kHalves) {
    registers_decrease<Tr::kProducerRegisters>();
    produce_chunks<Tr, kDeltaOnly>(smem, full, empty, p, maps, it, h, tile_c0);
    return;
  }
  if constexpr (Tr::kKeyGate) {
    if (wg < Tr::kProducerGroups) {
      if constexpr (Tr::kTransformRegisters < kLaunchRegisters) registers_decrease<Tr::kTransformRegisters>();
      if constexpr (Tr::kHalves) {
        if (wg == 0)
          transform_key_gate_halves<Tr, kDeltaOnly, 0>(smem, full, empty, ready, p, maps, it, h, tile_c0, item_index,
                                                       bc.value_block);
        else
          transform_key_gate_halves<Tr, kDeltaOnly, 1>(smem, full, empty, ready, p, maps, it, h, tile_c0, item_index,
                                                       bc.value_block);
      } else transform_key_gate_chunks<Tr, kDeltaOnly>(smem, full, empty, ready, p, it, h, item_index, bc.value_block);
      return;
    }
  }
  if constexpr (Tr::kConsumerRegisters > kLaunchRegisters) registers_increase<Tr::kConsumerRegisters>();
  const int cw = wg - Tr::kProducerGroups, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32,
            wg_thread = threadIdx.x % 128;
  const int K = p.key_dim, V = p.value_dim, c0 = tile_c0 + cw * Tr::kValues;
  double segment_log2 = 0;  // the segment's total log2-decay (scalar gate)

  // This consumer's state operand (hi; lo kS further) and output staging.
  __nv_bfloat16* sSh = smem + Tr::kOffS + cw * Tr::kSPer;
  __nv_bfloat16* sSl = sSh + Tr::kS;  // exact only
  __nv_bfloat16* sO = smem + Tr::kOffO + cw * Tr::kOPer;
  float S[64];  // S^T: value rows c0 + acc_row(i), key columns acc_col(i)
  const Strides4 ws{static_cast<std::int64_t>(p.heads) * K * V, static_cast<std::int64_t>(K) * V, V, 1};
  if (!kDeltaOnly && p.segment_states)
    state_t_from_global(S, p.segment_states, p.segment_states_transposed ? Strides4{ws.s0, ws.s1, 1, K} : ws,
                        item_index, h, c0, K, V);
  else if (!kDeltaOnly && p.initial_state) state_t_from_global(S, p.initial_state, p.s_initial, it.seq, h, c0, K, V);
  else state_t_from_global(S, nullptr, p.s_initial, 0, 0, c0, K, V);

  // The state as the B operand of Q S: [value][key] in 8 x 8 core matrices (16-byte rows, row
  // blocks of kKeys x 8), bf16 hi (and lo), then visible to this warpgroup's wgmma (the proxy
  // fence) and to all its threads (a named barrier). A warp's 32-bit stores fill whole core
  // matrices, so they do not conflict. Accumulator element i sits at a per-thread base plus a
  // compile-time offset: written that way so that no per-element address stays live.
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
  const int named = 1 + cw;  // this consumer's named barrier
  if (!kDeltaOnly) {
    state_to_tile();
    fence_async_shared();
    named_barrier_sync(named, 128);
  }

  // A chunk's outputs, scaled: fp32 pairs straight from the fragments (the backward's dq, dk before
  // the decay gradient; unit-stride rows, 8-byte aligned, V a multiple of 8), or bf16 staged
  // (staged_offset), then 16-byte row segments. kRowDots: the row dots first, from the operand
  // copied into the staging a chunk ahead (chunked/row_dots_sm90.cuh); the next chunk's copies
  // once the staging is free.
  const int r0 = warp * 16 + lane / 4;
  const RowDotPlace dot_place = kRowDots ? RowDotPlace::make(p, it.batch, h, c0, r0, lane, V) : RowDotPlace{};
  auto copy_next_row_dot_operand = [&](std::int64_t tg) {  // the chunk stored after the one at tg
    const std::int64_t next = tg + C, end = it.start + it.end;
    if (next < end)
      copy_row_dot_operand<Tr::kValues>(sO, p, dot_place, next, static_cast<int>(end - next < C ? end - next : C));
  };
  auto store_outputs = [&](const float(&O)[32], int c, std::int64_t tg) {
    if constexpr (kRowDots) store_row_dots<Tr::kValues>(O, sO, p, dot_place, tg, c);
    if (p.out_float || !Tr::kStagedOutputs) {
      const std::int64_t head = it.batch * p.so.s0 + static_cast<std::int64_t>(h) * p.so.s2;
#pragma unroll
      for (int i = 0; i < 32; i += 2) {
        const int row = r0 + ((i >> 1) & 1) * 8, col = c0 + (i >> 2) * 8 + 2 * (lane % 4);
        if (row >= c || col >= V) continue;
        const std::int64_t at = head + (tg + row) * p.so.s1 + col;
        if (p.out_float)
          *reinterpret_cast<float2*>(static_cast<float*>(p.o) + at) = make_float2(p.scale * O[i], p.scale * O[i + 1]);
        else
          *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.o) + at) =
              __floats2bfloat162_rn(p.scale * O[i], p.scale * O[i + 1]);
      }
      if constexpr (kRowDots) copy_next_row_dot_operand(tg);  // the staging holds only this thread's pairs
      return;
    }
#pragma unroll
    for (int i = 0; i < 32; i += 2) {
      const int row = r0 + ((i >> 1) & 1) * 8, col = (i >> 2) * 8 + 2 * (lane % 4);
      *reinterpret_cast<__nv_bfloat162*>(sO + staged_offset<Tr::kValues>(row, col)) =
          __floats2bfloat162_rn(p.scale * O[i], p.scale * O[i + 1]);
    }
    named_barrier_sync(named, 128);
    __nv_bfloat16* head =
        static_cast<__nv_bfloat16*>(p.o) + it.batch * p.so.s0 + static_cast<std::int64_t>(h) * p.so.s2;
    constexpr int kGroups = Tr::kValues / 8;
#pragma unroll
    for (int i = 0; i < C * kGroups / 128; ++i) {
      const int gi = wg_thread + i * 128;
      const int row = gi / kGroups, cb = gi % kGroups, col = c0 + cb * 8;
      if (row < c && col < V)
        *reinterpret_cast<uint4*>(head + (tg + row) * p.so.s1 + col) =
            *reinterpret_cast<const uint4*>(sO + staged_offset<Tr::kValues>(row, cb * 8));
    }
    if constexpr (kRowDots) {  // the staging is free once every thread's row reads above are done
      named_barrier_sync(named, 128);
      copy_next_row_dot_operand(tg);
    }
  };

  // The chunk's steps; each issue_* step fences, issues one wgmma group and commits it.
  float O[32];                                    // rows: tokens acc_row(i); columns: values c0 + acc_col(i)
  float A[32];                                    // the scores Q K^T
  std::uint32_t ph[4][4], pl[kExact ? 4 : 1][4];  // P's A fragments (hi, lo), masked and decayed
  auto stage_tiles = [&](int n) { return smem + (n % Tr::kStages) * Tr::kStage; };  // q, k, v, gates
  // The vector gate's lo tiles of a stage's decayed q and k, from the hi tiles' places.
  auto query_lo = [](const __nv_bfloat16* sQ) { return sQ + Tr::kLoTiles; };
  auto key_lo = [](const __nv_bfloat16* sK) { return sK - Tr::kQ + Tr::kLoTiles + Tr::kLoTile; };
  // This chunk's tiles have landed (the vector gate's: and are transformed); the token gate's
  // factors. False: the vector gate's transform stopped at this chunk (key_gate_sm90.cuh).
  auto chunk_start = [&](int n) {
    mbarrier_wait(&(Tr::kKeyGate ? ready : full)[n % Tr::kStages], (n / Tr::kStages) & 1);
    if constexpr (Tr::kTokenGate) {
      decay.prepare(reinterpret_cast<const float*>(stage_tiles(n) + Tr::kStageTiles));
      segment_log2 += decay.chunk_log2;
    }
    return !(Tr::kKeyGate && !kDeltaOnly && *reinterpret_cast<const int*>(stage_tiles(n) + Tr::kVerdict));
  };
  // The vector gate's state factor 2^T per key (a column of S^T): before the delta launch's
  // update, after the output launch's (key_gate_sm90.cuh).
  auto scale_state_keys = [&](int n) {
    const float* f = reinterpret_cast<const float*>(stage_tiles(n) + Tr::kFactors);
#pragma unroll
    for (int i = 0; i < 64; i += 2) {
      const float2 x = *reinterpret_cast<const float2*>(f + acc_col(i));
      S[i] *= x.x, S[i + 1] *= x.y;
    }
  };
  // This thread is done with chunk n's stage (its wgmma reads completed).
  auto release = [&](int n) { mbarrier_arrive(&empty[n % Tr::kStages]); };

  // S^T = exp(G_{c-1}) S^T + (V^T diag(exp(G_{c-1} - G_j))) K: reads the tiles and the registers
  // only (Q S reads the previous state from its shared-memory copy), so it is issued first.
  // Its first step, apart: ptxas cannot tell at a loop's back edge which wgmma group defines S, so
  // S is decayed while no group is in flight (else it injects a wait for all of them, C7517).
  auto decay_state = [&](int c) {
    const float lc = decay.state(c);
#pragma unroll
    for (int i = 0; i < 64; ++i) S[i] *= lc;
  };
  // The vector gate's values are not decayed (exact in bf16); its keys (K^ or K~) carry a lo tile.
  constexpr bool kSplitV = kExact && !Tr::kKeyGate, kSplitK = kExact && Tr::kKeyGate;
  auto issue_state_update = [&](const __nv_bfloat16* sK, const __nv_bfloat16* sV, int c) {
    std::uint32_t vh[4][4], vl[kSplitV ? 4 : 1][4];
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) {
      // Matrices: (values 16w..+7, tokens 16kk..+7), (values +8, same tokens), (values, tokens +8), (+8, +8).
      const int m = lane / 8, jb = 2 * kk + (m >> 1), vblk = cw * 8 + 2 * warp + (m & 1);
      std::uint32_t x[4];
      ldmatrix_x4_trans(x, sV + tile_offset<C>(jb * 8 + lane % 8, vblk * 8));
      const int j0 = kk * 16 + 2 * (lane % 4);
      const float w0 = decay.key(j0, c), w1 = decay.key(j0 + 1, c);
      const float w8 = decay.key(j0 + 8, c), w9 = decay.key(j0 + 9, c);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float2 f = unpack_bf16(x[r]);
        std::uint32_t hi, lo;
        split_pack_bf16(f.x * (r < 2 ? w0 : w8), f.y * (r < 2 ? w1 : w9), hi, lo);
        vh[kk][r] = hi;
        if constexpr (kSplitV) vl[kk][r] = lo;
      }
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) {
      wgmma_split_rs<kSplitV, 1>(S, vh[kk], vl[kSplitV ? kk : 0], tile_mn_major<C>(sK, kk, 0));
      if constexpr (kSplitK) wgmma_m64n128k16_rs<1>(S, vh[kk], tile_mn_major<C>(key_lo(sK), kk, 0), true);
    }
    wgmma_commit();
  };
  // A = Q K^T; the vector gate's Q~ K^^T with both lo terms in either mode (P then carries the
  // rounding of one bf16 split, as the mma.sync kernel's does).
  auto issue_scores = [&](const __nv_bfloat16* sQ, const __nv_bfloat16* sK) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Tr::kKeys / 16; ++kk) {
      wgmma_m64n64k16_ss<0, 0>(A, tile_k_major<C>(sQ, kk), tile_k_major<C>(sK, kk), kk > 0);
      if constexpr (Tr::kKeyGate) {
        wgmma_m64n64k16_ss<0, 0>(A, tile_k_major<C>(query_lo(sQ), kk), tile_k_major<C>(sK, kk), true);
        wgmma_m64n64k16_ss<0, 0>(A, tile_k_major<C>(sQ, kk), tile_k_major<C>(key_lo(sK), kk), true);
      }
    }
    wgmma_commit();
  };
  auto issue_inter = [&](const __nv_bfloat16* sQ) {  // O = Q S (the vector gate's Q~ with its lo term when exact)
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Tr::kKeys / 16; ++kk) {
      const std::uint64_t s_hi = wgmma_descriptor(sSh + kk * 128, 128, Tr::kKeys * 16);
      wgmma_split_ss<kExact>(O, tile_k_major<C>(sQ, kk), s_hi, wgmma_descriptor(sSl + kk * 128, 128, Tr::kKeys * 16),
                             kk > 0);
      if constexpr (kSplitK) wgmma_m64n64k16_ss<0, 0>(O, tile_k_major<C>(query_lo(sQ), kk), s_hi, true);
    }
    wgmma_commit();
  };
  // Causal decay mask as a select; the accumulator becomes P's A fragments (hi, lo). Element i:
  // row r0 + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2 (lane % 4) + (i & 1), so the distance
  // row - column is d0 plus a compile-time constant.
  auto mask_scores = [&] {
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
  };
  // After Q S has completed: the next chunk's state operand, then every thread of this consumer is
  // past this chunk's Q S (the tile may be rewritten) and past the previous chunk's output stores
  // (sO may be rewritten); then the rows' decay exp(G_i) on O = Q S.
  auto publish_state = [&](bool more) {
    if (more) {
      state_to_tile();
      fence_async_shared();
    }
    named_barrier_sync(named, 128);
    const float top = decay.row(warp * 16 + lane / 4), bottom = decay.row(warp * 16 + lane / 4 + 8);
#pragma unroll
    for (int i = 0; i < 32; ++i) O[i] *= (i & 2) ? bottom : top;
  };
  auto issue_values = [&](const __nv_bfloat16* sV) {  // O += P V
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk)
      wgmma_split_rs<kExact, 1>(O, ph[kk], pl[kExact ? kk : 0], tile_mn_major<C>(sV, kk, cw * Tr::kValues));
    wgmma_commit();
  };

  auto rows_at = [&](std::int64_t t) { return static_cast<int>(it.end - t < C ? it.end - t : C); };
  auto values_tile = [&](int n) { return stage_tiles(n) + Tr::kQ + Tr::kK; };
  // The rotated loop's end of chunk n - 1 (a whole one: chunk n follows it), once its P V is done.
  auto retire_previous = [&](int n, std::int64_t t) {
    if (n == 0) return;
    release(n - 1);
    store_outputs(O, C, it.start + t - C);
  };

  int n = 0;
  bool stopped = false;
  if constexpr (kRowDots)
    if (it.begin < it.end) copy_row_dot_operand<Tr::kValues>(sO, p, dot_place, it.start + it.begin, rows_at(it.begin));
  if constexpr (kDeltaOnly) {
    for (std::int64_t t = it.begin; t < it.end; t += C, ++n) {
      const int c = rows_at(t);
      chunk_start(n);
      if constexpr (Tr::kKeyGate) scale_state_keys(n);
      else decay_state(c);
      issue_state_update(stage_tiles(n) + Tr::kQ, values_tile(n), c);
      wgmma_wait<0>();
      release(n);
    }
  } else if constexpr (Tr::kRotated) {
    // Rotated by half a chunk: chunk n-1's P V runs behind chunk n's state update, its stores
    // behind chunk n's scores, and chunk n's mask behind its Q S. Nothing is in flight from one
    // iteration to the next (ptxas then keeps the wgmmas asynchronous: no injected waits). A stage
    // is held until the middle of the next chunk.
    // (Measured and dropped, H100 2026-12-07: issuing P V and the scores before the state update,
    // and the consumers issuing in turns as FlashAttention-3's ping-pong; docs/decisions.md.)
    for (std::int64_t t = it.begin; t < it.end; t += C, ++n) {
      const int c = rows_at(t);
      __nv_bfloat16 *sQ = stage_tiles(n), *sK = sQ + Tr::kQ, *sV = sK + Tr::kK;
      chunk_start(n);
      decay_state(c);
      issue_state_update(sK, sV, c);
      if (n > 0) issue_values(values_tile(n - 1));
      issue_scores(sQ, sK);
      wgmma_wait<1>();  // the state update and chunk n-1's P V
      retire_previous(n, t);
      issue_inter(sQ);
      wgmma_wait<1>();  // the scores
      mask_scores();
      wgmma_wait<0>();  // Q S: the state tile is free
      publish_state(t + C < it.end);
    }
    if (n > 0) {  // the last chunk's P V and stores
      const std::int64_t t = it.begin + static_cast<std::int64_t>(n - 1) * C;
      issue_values(values_tile(n - 1));
      wgmma_wait<0>();
      release(n - 1);
      store_outputs(O, rows_at(t), it.start + t);
    }
  } else {
    for (std::int64_t t = it.begin; t < it.end; t += C, ++n) {
      const int c = rows_at(t);
      __nv_bfloat16 *sQ = stage_tiles(n), *sK = sQ + Tr::kQ, *sV = sK + Tr::kK;
      if (!chunk_start(n)) {  // the vector gate's fallback runs this segment
        stopped = true;
        break;
      }
      decay_state(c);
      issue_state_update(sK, sV, c);
      issue_scores(sQ, sK);  // P = Q K^T and O = Q S, issued behind the state update
      issue_inter(sQ);
      wgmma_wait<1>();  // the state update and P
      if constexpr (Tr::kKeyGate) scale_state_keys(n);
      mask_scores();
      wgmma_wait<0>();  // Q S: the state tile is free
      publish_state(t + C < it.end);
      issue_values(sV);
      wgmma_wait<0>();
      release(n);
      store_outputs(O, c, it.start + t);
    }
  }

  if (kDeltaOnly) {  // the next slot, or last_delta for a sequence's last segment
    if (last_segment) state_t_to_global(S, p.last_delta, ws, it.seq, h, c0, K, V);
    else state_t_to_global(S, p.segment_states, ws, item_index + 1, h, c0, K, V);
    if constexpr (Tr::kTokenGate)
      if (bc.value_block == 0 && cw == 0 && wg_thread == 0)
        p.segment_log_decay[item_index * p.heads + h] = static_cast<float>(segment_log2);
  } else if (last_segment && p.final_state && !stopped) {
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
