#!/usr/bin/env bash
# Prepared knobs (compile-time macros, docs/building.md) checked and timed in one GPU call
# (docs/gpu.md): the CUDA test runner built with every knob on, then an A/B of each knob against
# the default build (scripts/gpu_ab.sh) over the forward, the training steps and decode.
#   here:  scripts/gpu_knobs.sh build 'ALL_KNOB_FLAGS' NAME='FLAGS' [NAME='FLAGS' ...]
#          e.g. scripts/gpu_knobs.sh build '-DLCSM_CUDA_SM90_FAST_ROTATED=1' rot='-DLCSM_CUDA_SM90_FAST_ROTATED=1'
#          -> .knobs.tar.xz (the runner) and .ab.tar.xz (the A/B binaries; a variant `cur` with no
#          flags is added first). Building takes long on two cores (the backward's benchmarks).
#   there: bash scripts/gpu_knobs.sh run          (carry .knobs.tar.xz and .ab.tar.xz)
# run writes to $OUT (packed into knobs-results.tar.xz at the end): knob_suite.txt (the suite in bf16: the sm_90a kernels), knob_racecheck.txt
# (racecheck on the cases that reach the knobs' code), ab/ and the A/B table on stdout
# (LCSM_KNOBS_AB_FILTER narrows it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
  build)
    shift
    all_flags=$1
    shift
    cmake -S . -B build-knobs -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCSM_ENABLE_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90a-real -DCMAKE_CUDA_RUNTIME_LIBRARY=Static \
      -DCMAKE_CUDA_FLAGS="$all_flags" -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" >/dev/null
    ninja -C build-knobs lcsm_tests_cuda
    rm -rf .knobs && mkdir -p .knobs
    cp build-knobs/tests/cuda/lcsm_tests_cuda .knobs/
    echo "$all_flags" >.knobs/flags.txt
    tar -cf - .knobs | xz -T2 -6 >.knobs.tar.xz
    grep -qx '/.knobs.tar.xz' .git/info/exclude || echo '/.knobs.tar.xz' >>.git/info/exclude
    grep -qx '/.knobs/' .git/info/exclude || echo '/.knobs/' >>.git/info/exclude
    LCSM_AB_EXTRA="bench/cuda/backward_bench.cu bench/cuda/gated_bench.cu" scripts/gpu_ab.sh build cur= "$@"
    du -sh .knobs.tar.xz .ab.tar.xz
    ;;
  run)
    out=${OUT:-/tmp/lcsm-out}
    mkdir -p "$out"
    [ -f .knobs.tar.xz ] && { rm -rf .knobs; python3 -c "import tarfile; tarfile.open('.knobs.tar.xz').extractall()"; }
    # cuFFT (the Toeplitz cases) is linked dynamically: the machine's toolkit, else PyTorch's wheel.
    cufft=$(python3 -c "import glob, os, torch; print(':'.join(sorted({os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib', 'libcufft.so*'))})))" 2>/dev/null || true)
    export LD_LIBRARY_PATH="$PWD/.ab:/usr/local/cuda/lib64:$cufft:${LD_LIBRARY_PATH:-}"
    # The device tool brings back 8 files: whatever is under $OUT at the end goes into one archive.
    trap '(cd "$out" && tar -cJf /tmp/knobs-results.tar.xz . && find . -mindepth 1 -delete && mv /tmp/knobs-results.tar.xz .)' EXIT
    trap 'exit 143' TERM
    echo "knobs: $(cat .knobs/flags.txt)"
    LCSM_TEST_DTYPES=bf16 timeout 200 .knobs/lcsm_tests_cuda --rng-seed time -r compact "~[long]" \
      >"$out/knob_suite.txt" 2>&1 || echo "knob suite: failed (exit $?)"
    tail -n 2 "$out/knob_suite.txt"
    subset='lightning forward: head dimensions,lightning decode: many sequences*,gated decode: many sequences*'
    subset="$subset,lightning backward: varlen and strided memory,gated backward: varlen and strided memory"
    subset="$subset,gated forward: K = V = 128*,cuda vector gate: gentle*"
    LCSM_TEST_DTYPES=bf16 timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 .knobs/lcsm_tests_cuda \
      --rng-seed 1 "$subset" >"$out/knob_racecheck.txt" 2>&1 || echo "knob racecheck: failed (exit $?)"
    grep -E 'RACECHECK SUMMARY|passed|failed' "$out/knob_racecheck.txt" | tail -n 2
    filter=${LCSM_KNOBS_AB_FILTER:-'BM_copy|BM_forward(_fast)?<__nv_bfloat16>/B:1/T:(65536|1048576)|BM_forward_passes|BM_(lightning|scalar_gate)_training_step<bf16>/B:1/T:(16384|65536)/|BM_(scalar_gate_|vector_gate_)?decode/B:64|BM_vector_gate_(forward|passes)(_fast)?<bf16>/B:1/T:(65536|1048576)/'}
    LCSM_AB_FILTER=$filter bash scripts/gpu_ab.sh run 2
    ;;
  *)
    sed -n 2,14p "$0"
    exit 2
    ;;
esac
