#!/usr/bin/env bash
# Builds the demo (examples/) in Release for this machine's CPU (-DLCSM_NATIVE=ON) and runs it:
# lightning attention forward, backward and decode at T = 65536, H = 16, K = V = 128, then the
# scalar and vector gated recurrences, cosFormer forward and decode and a C = 1024 Toeplitz
# convolution, each timed (the warm second call; the first call's time and page faults beside it)
# and checked against the float64 reference. Installs what is missing first (scripts/deps.sh).
#   usage: scripts/demo.sh [demo options: --T N --threads N --decode N --rows N --seed N]
# Environment: LCSM_DEMO_BUILD_DIR (build-demo), LCSM_CMAKE_ARGS, LCSM_SKIP_DEPS=1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/deps.sh

build=${LCSM_DEMO_BUILD_DIR:-build-demo}
read -r -a extra <<<"${LCSM_CMAKE_ARGS:-}"
generator=()
[ -f "$build/CMakeCache.txt" ] || generator=(-G Ninja)
# The CPU demo needs neither the tests nor CUDA; a CUDA demo section would turn LCSM_ENABLE_CUDA on.
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DLCSM_NATIVE=ON -DLCSM_BUILD_EXAMPLES=ON \
  -DLCSM_BUILD_TESTS=OFF -DLCSM_ENABLE_CUDA=OFF ${extra[@]+"${extra[@]}"} >/dev/null
cmake --build "$build" --target lcsm_demo
"$build/examples/demo" "$@"

# On a machine with a GPU and nvcc, the GPU half too (examples/demo_cuda.cu).
nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && [ -x "$nvcc_bin" ]; then
  gpu_build=${LCSM_DEMO_CUDA_BUILD_DIR:-build-demo-cuda}
  gen=()
  [ -f "$gpu_build/CMakeCache.txt" ] || gen=(-G Ninja)
  cmake -S . -B "$gpu_build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DLCSM_BUILD_EXAMPLES=ON -DLCSM_BUILD_TESTS=OFF \
    -DLCSM_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_bin" ${extra[@]+"${extra[@]}"} >/dev/null
  cmake --build "$gpu_build" --target lcsm_demo_cuda
  "$gpu_build/examples/demo_cuda"
else
  echo "(no GPU here: the CUDA half of the demo, examples/demo_cuda.cu, runs where nvidia-smi finds one)"
fi
