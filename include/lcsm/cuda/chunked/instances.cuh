// The engine's instances: the (input type, decay) pairs every front-end call reaches, as explicit
// instantiations of run_forward and run_step. Every .cu file that includes the CUDA headers
// otherwise compiles the kernels of the calls it makes again (minutes each for nvcc); a project with
// many such files can compile them once:
//   - define LCSM_CUDA_EXTERN_INSTANCES in every translation unit (the calls are then declared
//     extern and their kernels are not compiled there), and
//   - compile one file (or one per decay, for parallel builds) that includes lcsm/cuda.cuh and says
//     LCSM_CUDA_INSTANTIATE(head), LCSM_CUDA_INSTANTIATE(token), LCSM_CUDA_INSTANTIATE(key),
//     LCSM_CUDA_INSTANTIATE(cosine) and LCSM_CUDA_INSTANTIATE_FORWARD(value) (the vector gate's
//     backward passes: a forward only).
// run.cuh includes this header after its definitions and declares the instances extern there.
// lcsm's own tests, benchmarks and demo do this (instances/CMakeLists.txt). Without the macro the
// headers stay header-only: nothing here changes what a call computes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// The instances of one decay kind (head: lightning; token: scalar gate; key: vector gate; cosine:
// cosFormer) for the three input types: PREFIX extern declares them (run.cuh, under
// LCSM_CUDA_EXTERN_INSTANCES), an empty PREFIX defines them (LCSM_CUDA_INSTANTIATE).
// run_forward's instance is its phased form (run.cuh); the other overload calls it.
#define LCSM_CUDA_FORWARD_INSTANCE_OF_TYPE(PREFIX, T, DECAY)                                                 \
  PREFIX template void lcsm::cuda::detail::run_forward<T, lcsm::cuda::detail::DecayKind::DECAY>(             \
      lcsm::cuda::detail::RecurrenceParams, const lcsm::cuda::detail::ChunkPlan&, const lcsm::cuda::Device&, \
      lcsm::Precision, lcsm::cuda::detail::ForwardPhase);
#define LCSM_CUDA_INSTANCES_OF_TYPE(PREFIX, T, DECAY)                                         \
  LCSM_CUDA_FORWARD_INSTANCE_OF_TYPE(PREFIX, T, DECAY)                                        \
  PREFIX template void lcsm::cuda::detail::run_step<T, lcsm::cuda::detail::DecayKind::DECAY>( \
      lcsm::cuda::detail::RecurrenceParams, const lcsm::View<float, 4>&, cudaStream_t);
#define LCSM_CUDA_INSTANCES_OF_DECAY(PREFIX, DECAY)  \
  LCSM_CUDA_INSTANCES_OF_TYPE(PREFIX, float, DECAY)  \
  LCSM_CUDA_INSTANCES_OF_TYPE(PREFIX, __half, DECAY) \
  LCSM_CUDA_INSTANCES_OF_TYPE(PREFIX, __nv_bfloat16, DECAY)
#define LCSM_CUDA_INSTANTIATE(DECAY) LCSM_CUDA_INSTANCES_OF_DECAY(, DECAY)
#define LCSM_CUDA_FORWARD_INSTANCES_OF_DECAY(PREFIX, DECAY) \
  LCSM_CUDA_FORWARD_INSTANCE_OF_TYPE(PREFIX, float, DECAY)  \
  LCSM_CUDA_FORWARD_INSTANCE_OF_TYPE(PREFIX, __half, DECAY) \
  LCSM_CUDA_FORWARD_INSTANCE_OF_TYPE(PREFIX, __nv_bfloat16, DECAY)
#define LCSM_CUDA_INSTANTIATE_FORWARD(DECAY) LCSM_CUDA_FORWARD_INSTANCES_OF_DECAY(, DECAY)
