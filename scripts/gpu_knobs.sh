#!/usr/bin/env bash
# The prepared knobs in one GPU call (docs/gpu.md, docs/building.md): LCSM_CUDA_SM90_EXACT_DIRECT
# (exact-mode outputs from the fragments; the scalar gate's exact mode gets a third stage and the
# rotated loop), LCSM_CUDA_SM90_EARLY_ISSUE (the rotated loop's conversions under two products in
# flight), LCSM_CUDA_FUSED_RADIX16 (the fused FFT convolution's stages radix 16),
# LCSM_CUDA_BACKWARD_ROW_DOTS (the decay gradient's terms from the dq/dk passes' epilogues),
# LCSM_CUDA_SM90_PINGPONG (the rotated loop's consumers issue in turns) and
# LCSM_CUDA_BACKWARD_SHARED_STATES (the dk pass from the dv pass's scanned states). Builds here,
# runs there:
#   here:  scripts/gpu_knobs.sh prepare   (~25 min on 2 cores: .device.tar.xz with a test binary
#                                          built with all six knobs, .ab.tar.xz with ten variants
#                                          of the lightning, gated, Toeplitz and training-step
#                                          benchmarks)
#   there: scripts/gpu_knobs.sh run       (carry .device.tar.xz, .ab.tar.xz and .whl; <= 10 min)
# Stages, most decisive first, each packed into $OUT/results.tgz as it ends (a cut call keeps
# them): the A/B (bf16 forwards: lightning and the scalar gate in both modes, the fused Toeplitz
# forward, the training steps), the bf16 suite and racecheck on the knobs' build, HEAD's suite, the peers script
# (lightning and gated).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
direct='-DLCSM_CUDA_SM90_EXACT_DIRECT=1' early='-DLCSM_CUDA_SM90_EARLY_ISSUE=1' radix16='-DLCSM_CUDA_FUSED_RADIX16=1'
rowdots='-DLCSM_CUDA_BACKWARD_ROW_DOTS=1' pp='-DLCSM_CUDA_SM90_PINGPONG=1' shared='-DLCSM_CUDA_BACKWARD_SHARED_STATES=1'
case "${1:-}" in
  prepare)
    set -e
    cmake -S . -B build-device -G Ninja -DCMAKE_CUDA_FLAGS="" >/dev/null
    LCSM_DEVICE_BUILD=build-device bash scripts/gpu_prepare.sh
    cmake -S . -B build-knobs -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCSM_ENABLE_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90a-real -DCMAKE_CUDA_RUNTIME_LIBRARY=Static \
      -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" -DCMAKE_CUDA_FLAGS="$direct $early $radix16 $rowdots $pp $shared" >/dev/null
    ninja -C build-knobs lcsm_tests_cuda
    cp build-knobs/tests/cuda/lcsm_tests_cuda .device/lcsm_tests_cuda_knobs
    tar -cf - .device | xz -T2 -6 >.device.tar.xz
    grep -qx '/build-knobs/' .git/info/exclude || echo '/build-knobs/' >>.git/info/exclude
    LCSM_AB_EXTRA="bench/cuda/gated_bench.cu bench/cuda/toeplitz_bench.cu bench/cuda/backward_bench.cu -lcufft" \
      bash scripts/gpu_ab.sh build cur= direct="$direct" early="$early" both="$direct $early" radix16="$radix16" \
      rowdots="$rowdots" pingpong="$pp" ppearly="$pp $early" shared="$shared" backward="$rowdots $shared"
    ;;
  run)
    out=${OUT:-/tmp/lcsm-out}
    R=$out/r
    mkdir -p "$R"
    t0=$(date +%s)
    el() { echo "[$(($(date +%s) - t0)) s] $*"; }
    pack() { tar -C "$out" -czf "$out/results.tgz" r 2>/dev/null; }
    # cuFFT for the Toeplitz benchmarks: the machine's toolkit, else PyTorch's wheel (as gpu_run.sh).
    cufft=$(python3 -c "import glob, os, torch; print(':'.join(sorted({os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib', 'libcufft.so*'))})))" 2>/dev/null)
    export LD_LIBRARY_PATH="$PWD/.device/lib:/usr/local/cuda/lib64:$cufft:${LD_LIBRARY_PATH:-}"
    python3 -c "import tarfile; tarfile.open('.device.tar.xz').extractall(); tarfile.open('.ab.tar.xz').extractall()"
    rm -f .device.tar.xz  # gpu_run.sh below then keeps the unpacked .device
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$R/gpu.txt"
    .device/lcsm_tests_cuda --list-tests >/dev/null 2>&1 ||
      cp .device/lib/libstdc++.so.6.fallback .device/lib/libstdc++.so.6
    el "A/B"
    f="BM_forward(_fast)?<__nv_bfloat16>|BM_forward_passes|BM_scalar_gate_forward(_fast)?<bf16>"
    f="$f|BM_toeplitz_forward_causal(_fused)?<bf16>/B:1/n:(65536|1048576)"
    f="$f|BM_(lightning|scalar_gate)_training_step<bf16>/B:1/T:(16384|65536)/"
    f=${LCSM_KNOBS_FILTER:-$f}  # a narrower set when device time is short
    LCSM_AB_FILTER="$f" OUT=$R timeout 330 bash scripts/gpu_ab.sh run "${LCSM_AB_ROUNDS:-2}" >"$R/ab.txt" 2>&1
    grep -v "^ " "$R/ab.txt" | tail -n 40
    pack
    el "bf16 suite and racecheck, both knobs"
    LCSM_TEST_DTYPES=bf16 timeout 70 .device/lcsm_tests_cuda_knobs --rng-seed time -r compact "~[long]" \
      >"$R/suite_knobs.txt" 2>&1
    echo "rc $?"
    grep -E "failed" "$R/suite_knobs.txt" | head -8 | cut -c1-300
    tail -n 2 "$R/suite_knobs.txt"
    LCSM_TEST_DTYPES=bf16 timeout 70 compute-sanitizer --tool racecheck --error-exitcode 9 .device/lcsm_tests_cuda_knobs \
      --rng-seed 1 'lightning forward: head dimensions,gated forward: head dimensions,gated forward: varlen with per-sequence states,toeplitz forward: varlen sequences are convolved separately,lightning backward: varlen and strided memory' \
      >"$R/racecheck_knobs.txt" 2>&1
    echo "racecheck rc $? $(grep -E 'RACECHECK SUMMARY' "$R/racecheck_knobs.txt" | tail -n 1)"
    pack
    el "HEAD's bf16 suite"
    LCSM_TEST_DTYPES=bf16 timeout 50 .device/lcsm_tests_cuda --rng-seed time -r compact "~[long]" >"$R/suite.txt" 2>&1
    echo "rc $?"
    tail -n 2 "$R/suite.txt"
    pack
    el "peers"
    mkdir -p "$R/peers"
    OUT=$R/peers LCSM_PEERS_ARGS="--families lightning,gated" timeout 180 bash scripts/gpu_run.sh peers 2>&1 | tail -n 40
    pack
    el "end"
    ;;
  *)
    echo "usage: scripts/gpu_knobs.sh prepare|run" >&2
    exit 2
    ;;
esac
