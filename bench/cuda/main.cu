// The CUDA benchmark binary's entry point; each family registers its benchmarks in its own file.
#include "common.cuh"

BENCHMARK_MAIN();
