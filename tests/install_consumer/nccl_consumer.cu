// The NCCL consumer compiles and links against lcsm::nccl: lcsm's sequence-parallel forward, NCCL's
// headers and library found through the package. Built only (CI has no GPU): it runs nothing.
#include <cstdio>
#include <lcsm/cuda.cuh>
#include <lcsm/cuda/sequence_parallel.cuh>

int main(int argc, char**) {
  if (argc > 1) {  // never in CI: a call that instantiates the NCCL path
    lcsm::LightningAttention op;
    ncclComm_t comm = nullptr;
    lcsm::cuda::sequence_parallel::forward<float>(lcsm::cuda::Device{}, comm, op, {}, {}, {}, {});
    lcsm::cuda::sequence_parallel::backward<float>(lcsm::cuda::Device{}, comm, op, {}, {}, {}, {}, {}, {}, {}, {},
                                                   lcsm::View<float, 1>{});
  }
  std::printf("lcsm::nccl consumer built (%s)\n", ncclGetErrorString(ncclSuccess));
  return 0;
}
