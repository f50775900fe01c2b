// The CUDA consumer compiles against lcsm::cuda: the headers, CUB and the runtime are found
// through the package. Compiled only (CI has no GPU).
#include <lcsm/cuda.cuh>

lcsm::cuda::Device consumer_device() { return lcsm::cuda::Device{}; }
