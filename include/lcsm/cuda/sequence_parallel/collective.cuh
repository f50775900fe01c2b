// The one collective sequence parallelism needs, as an interface: NCCL implements it
// (lcsm/cuda/sequence_parallel.cuh, component lcsm::nccl); the tests implement it with R virtual
// ranks on one GPU, so the algorithm is tested wherever the CUDA suite runs. Host code.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace lcsm::cuda::sequence_parallel {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // recv[q * bytes, (q + 1) * bytes) = rank q's send buffer, for every rank q; enqueued on stream,
  // the host not synchronised.
  virtual void all_gather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream) = 0;
};

}  // namespace lcsm::cuda::sequence_parallel
