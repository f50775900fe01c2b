// 2^x in one MUFU instruction (ex2.approx.ftz: relative error below 2^-22; results under 2^-126
// flush to zero). Every factor the decay policies form is 2^x with x <= 0 multiplying data of order
// one, so a flushed factor changes a result by less than 1e-38 of its scale; exp2f would add a
// denormal fix-up (three more instructions) around the same MUFU.EX2.
#pragma once

namespace lcsm::cuda::detail {

__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 2^{hi + lo} for |lo| <= 2^-7 (an unevaluated float pair, as the gates' cumulative sums are kept):
// 2^lo = 1 + lo ln 2 + lo^2 (ln 2)^2 / 2 to within float rounding (two FMAs; |lo| reaches 2^-8 in
// a 32-token chunk whose gates sum to the contract's limit, 32 x -1000, and a difference of two
// such lo terms over 64 tokens 2^-7).
__device__ __forceinline__ float exp2_pair(float hi, float lo) {
  return exp2_ftz(hi) * fmaf(lo, fmaf(lo, 0.2402265069591007f, 0.6931471805599453f), 1.f);
}

}  // namespace lcsm::cuda::detail
