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

}  // namespace lcsm::cuda::detail
