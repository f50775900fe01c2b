// Work items of the chunked kernels: a CTA's block index -> (segment of a sequence, head, block of
// value columns), and the tokens that segment covers. Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/params.cuh"

namespace lcsm::cuda::detail {

// One work item: a segment [begin, end) of sequence `seq` (tokens start + begin .. of row `batch`).
struct Item {
  std::int64_t seq, batch, start, length, begin, end;
  std::int64_t segment, segments;
};

template <class Index>
__device__ __forceinline__ std::int64_t load_offset(const void* p, std::int64_t i) {
  return static_cast<std::int64_t>(static_cast<const Index*>(p)[i]);
}
__device__ __forceinline__ std::int64_t cu_offset(const RecurrenceParams& p, std::int64_t i) {
  const std::int64_t x =
      p.cu_seqlens_int64 ? load_offset<std::int64_t>(p.cu_seqlens, i) : load_offset<std::int32_t>(p.cu_seqlens, i);
  return x < 0 ? 0 : (x > p.time ? p.time : x);  // contents are not validated: never index outside
}

// Maps a global segment index to its sequence and token range; false past the last segment.
__device__ __forceinline__ bool decode_item(const RecurrenceParams& p, std::int64_t item, Item& it) {
  if (!p.cu_seqlens) {
    it.seq = item / p.segments_per_seq;
    it.segment = item % p.segments_per_seq;
    it.segments = p.segments_per_seq;
    it.batch = it.seq;
    it.start = 0;
    it.length = p.time;
  } else if (!p.segment_offsets) {  // varlen, one segment per sequence
    if (item >= p.sequences) return false;
    it.seq = item;
    it.segment = 0;
    it.segments = 1;
    it.batch = 0;
    it.start = cu_offset(p, item);
    it.length = cu_offset(p, item + 1) - it.start;
    if (it.length < 0) it.length = 0;
  } else {
    if (item >= p.segment_offsets[p.sequences]) return false;
    std::int64_t lo = 0, hi = p.sequences;  // largest n with offsets[n] <= item
    while (hi - lo > 1) {
      const std::int64_t mid = (lo + hi) / 2;
      if (p.segment_offsets[mid] <= item) lo = mid;
      else hi = mid;
    }
    it.seq = lo;
    it.segment = item - p.segment_offsets[lo];
    it.segments = p.segment_offsets[lo + 1] - p.segment_offsets[lo];
    it.batch = 0;
    it.start = cu_offset(p, lo);
    it.length = cu_offset(p, lo + 1) - it.start;
    if (it.length < 0) it.length = 0;
  }
  it.begin = it.segment * p.segment_len;
  it.end = it.begin + p.segment_len < it.length ? it.begin + p.segment_len : it.length;
  if (it.begin > it.end) it.begin = it.end;
  return true;
}

// The block's (value block, head, item) from blockIdx.x: value blocks vary fastest.
struct BlockCoords {
  int value_block, head;
  std::int64_t item;
};
__device__ __forceinline__ BlockCoords block_coords(const RecurrenceParams& p) {
  const int vb = static_cast<int>(blockIdx.x % p.value_blocks);
  const int h = static_cast<int>((blockIdx.x / p.value_blocks) % p.heads);
  return {vb, h, static_cast<std::int64_t>(blockIdx.x / (static_cast<unsigned>(p.value_blocks) * p.heads))};
}

}  // namespace lcsm::cuda::detail
