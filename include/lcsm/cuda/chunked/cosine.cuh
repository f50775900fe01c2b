// cosFormer's per-token quantities on the device, shared by the chunk kernel (cosine_sm80.cuh) and
// the decode kernel (decode.cuh): the feature map and where a sequence's tokens sit. Device code.
#pragma once

#include <cstdint>

#include "lcsm/cuda/chunked/params.cuh"

namespace lcsm::cuda::detail {

// phi(x) with NaN kept (x < 0 and x > 0 are false for NaN), as the CPU's cos_phi.
__device__ __forceinline__ float cos_phi(bool relu, float x) {
  if (relu) return x < 0.f ? 0.f : x;
  return x > 0.f ? x + 1.f : expf(x);
}

// Where a sequence's tokens sit: token t (from the sequence's start) is at position first + t, its
// angle pi (first + t) * half_inverse_m. Positions are not validated (device memory, read here):
// a negative one is taken as 0, and M < 1 as 1, so that nothing divides by zero.
struct CosSequence {
  std::int64_t first;
  double half_inverse_m;  // 1 / 2M
};
__device__ __forceinline__ CosSequence cos_sequence(const RecurrenceParams& p, std::int64_t seq, std::int64_t length) {
  std::int64_t first = p.positions ? p.positions[seq] : 0;
  if (first < 0) first = 0;
  std::int64_t m = p.cos_length > 0 ? p.cos_length : first + length;
  if (m < 1) m = 1;
  return {first, 0.5 / static_cast<double>(m)};
}

// (cos, sin) of the angle of token t of the sequence.
__device__ __forceinline__ float2 cos_angle(const CosSequence& sq, std::int64_t t) {
  double s = 0, c = 0;
  sincospi(static_cast<double>(sq.first + t) * sq.half_inverse_m, &s, &c);
  return make_float2(static_cast<float>(c), static_cast<float>(s));
}

}  // namespace lcsm::cuda::detail
