// The work plan of a forward call: the tile a CTA runs (tokens per chunk, value columns per CTA),
// how sequences are cut into segments along time, and the workspace that needs. Host code.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "lcsm/cuda/chunked/decay.cuh"
#include "lcsm/cuda/error.cuh"

namespace lcsm::cuda::detail {

inline int multiprocessor_count() {
  int device = 0, count = 0;
  LCSM_CUDA_CHECK(cudaGetDevice(&device));
  LCSM_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// Tokens per chunk (segments are whole chunks: where a decay kind's two kernels chunk differently,
// the larger) and value columns per CTA. The same for both kernels of a decay kind (the wgmma
// kernel's 128 value columns give the same number of value blocks), so the plan and the workspace
// do not depend on which kernel runs.
struct TileShape {
  int chunk, value_tile;
};

// The vector gate's value tile for K <= 128 (64 or 128): a compile-time knob for tuning runs only
// (it changes the speed, not the results beyond rounding order); the default is the measured best.
#ifndef LCSM_CUDA_KEY_GATE_VALUE_TILE
#define LCSM_CUDA_KEY_GATE_VALUE_TILE 128
#endif
constexpr int kKeyGateValueTile = LCSM_CUDA_KEY_GATE_VALUE_TILE;
static_assert(kKeyGateValueTile == 64 || kKeyGateValueTile == 128, "LCSM_CUDA_KEY_GATE_VALUE_TILE: 64 or 128");

// The vector gate's sm_90a kernel takes K = 128 exactly (a key per producer thread).
constexpr int kKeyGateSm90Keys = 128;

inline TileShape tile_shape(DecayKind decay, std::int64_t key_dim, std::int64_t value_dim) {
  // cosFormer: the state's 2K rows are the key tile; K <= 128 keeps 128 value columns per CTA (16
  // warps), so that features, scores and normaliser are formed once per 128 columns.
  if (decay == DecayKind::cosine)
    return key_dim <= 64 ? TileShape{64, value_dim <= 64 ? 64 : 128} : TileShape{32, value_dim <= 64 ? 64 : 128};
  // The vector gate: the mma.sync kernel's chunks are 32 tokens (16 for K > 128); at K = 128 the
  // sm_90a kernel's are 64, and segments of whole 64-token chunks serve both.
  if (decay == DecayKind::key)
    return key_dim > 128 ? TileShape{16, 64} : TileShape{key_dim == kKeyGateSm90Keys ? 64 : 32, kKeyGateValueTile};
  if (decay == DecayKind::value) return key_dim > 128 ? TileShape{32, 64} : TileShape{32, value_dim <= 64 ? 64 : 128};
  if (key_dim > 128) return {32, 64};
  if (decay == DecayKind::token) return {64, 128};
  return {64, value_dim <= 64 ? 64 : 128};
}

struct ChunkPlan {
  TileShape tile;
  std::int64_t value_blocks, segment_len, segments_per_seq, max_items;
  bool split;
  std::size_t states_bytes, log_decay_bytes, offsets_bytes;
  std::size_t flags_bytes;   // the vector gate: a fallback flag per CTA (params.cuh, fallback_flags)
  std::size_t totals_bytes;  // cosFormer non-causal: each sequence's whole sums (cuda/cosformer.cuh); last
  std::size_t workspace_bytes() const {
    return states_bytes + log_decay_bytes + offsets_bytes + flags_bytes + totals_bytes;
  }
};

inline std::size_t round_up_256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

// Each CTA (one per SM: most of the shared memory) walks a whole segment, so the grid should be
// one full wave. Sequences are cut only when (sequences x heads x value blocks) would leave more
// than half of the SMs idle; then into as many equal segments (whole chunks, at least 4 of them)
// as fit in one wave. gate_width: log-decays per (token, head) the segment scan needs (0 when the
// decay is per head, 1 for a scalar gate, K for a vector gate).
inline ChunkPlan plan_chunks(TileShape tile, std::int64_t time, std::int64_t heads, std::int64_t key_dim,
                             std::int64_t value_dim, std::int64_t sequences, bool varlen, int gate_width, int sms) {
  ChunkPlan p{};
  p.tile = tile;
  p.value_blocks = (value_dim + tile.value_tile - 1) / tile.value_tile;
  const std::int64_t chunk = tile.chunk, unit = std::max<std::int64_t>(chunk, 32);  // 16-token chunks cut as 32
  const std::int64_t base = std::max<std::int64_t>(1, sequences * heads * p.value_blocks);
  const std::int64_t mean_len = sequences > 0 ? (time + sequences - 1) / sequences : 0;
  const std::int64_t segments = std::max<std::int64_t>(1, sms / base);
  p.split = 2 * base <= sms && segments > 1 && mean_len >= 8 * unit;
  if (!p.split) {
    p.segment_len = std::max<std::int64_t>(time, 1);
    p.segments_per_seq = 1;
    p.max_items = sequences;
    return p;
  }
  const std::int64_t per = (mean_len + segments - 1) / segments;
  p.segment_len = std::max<std::int64_t>(4 * unit, (per + chunk - 1) / chunk * chunk);
  p.segments_per_seq = varlen ? 0 : std::max<std::int64_t>(1, (time + p.segment_len - 1) / p.segment_len);
  p.max_items = varlen ? sequences + (time + p.segment_len - 1) / p.segment_len : sequences * p.segments_per_seq;
  p.states_bytes = round_up_256(static_cast<std::size_t>(p.max_items * heads * key_dim * value_dim) * sizeof(float));
  p.log_decay_bytes = round_up_256(static_cast<std::size_t>(p.max_items * heads * gate_width) * sizeof(float));
  p.offsets_bytes = varlen ? static_cast<std::size_t>(sequences + 1) * sizeof(std::int64_t) : 0;
  return p;
}

}  // namespace lcsm::cuda::detail
