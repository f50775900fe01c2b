#!/usr/bin/env bash
# Runs on the GPU machine from the repo root, with .device.tar.xz (or .device) and .whl carried
# (see gpu_prepare.sh):
# the CUDA test suite, the 1M-token check, compute-sanitizer (memcheck, racecheck) on a reduced
# set, the Google Benchmark CUDA suite and the peers comparison. Full logs and JSON go to $OUT;
# the short tables come last on stdout.
#   usage: scripts/gpu_run.sh [all|tests|sanitize|bench|peers|demo]...
# The stages run in the order given (all: tests sanitize bench demo peers). The device tool brings
# back at most 8 files: when $OUT holds more at the end (a call stopped by its time limit too, by
# the EXIT trap), they are packed into $OUT/results.tar.xz.
# Environment: LCSM_BENCH_FILTER (a --benchmark_filter regex), LCSM_PEERS_ARGS (extra arguments of
# gpu_peers.py, e.g. --families gated), LCSM_LONG_T, LCSM_SANITIZE_TOOLS, LCSM_SANITIZE_DTYPES.
set -uo pipefail
out=${OUT:-/tmp/lcsm-out}
mkdir -p "$out"
stages=${*:-all}
# cuFFT (the Toeplitz FFT path) is linked dynamically: the machine's toolkit, else PyTorch's wheel.
cufft_dirs=/usr/local/cuda/lib64
for d in $(python3 -c "import glob, os, torch; print(' '.join(sorted({os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib', 'libcufft.so*'))})))" 2>/dev/null); do
  cufft_dirs="$cufft_dirs:$d"
done
export LD_LIBRARY_PATH="$PWD/.device/lib:$cufft_dirs:${LD_LIBRARY_PATH:-}"
if [ -f .device.tar.xz ]; then  # carried packed (gpu_prepare.sh); a warm machine's old .device goes
  rm -rf .device && python3 -c "import tarfile; tarfile.open('.device.tar.xz').extractall()"
fi
status=0
pack_out() {  # more than 7 files under $OUT: one archive instead (the device tool returns 8 files)
  local n
  n=$(find "$out" -type f | wc -l)
  if [ "$n" -gt 7 ]; then
    (cd "$out" && find . -type f ! -name results.tar.xz -print0 | tar --null -cJf /tmp/lcsm-results.tar.xz -T - &&
      find . -mindepth 1 -delete && mv /tmp/lcsm-results.tar.xz results.tar.xz)
    echo "($n files under \$OUT packed into results.tar.xz)"
  fi
}
trap pack_out EXIT
trap 'exit 143' TERM  # a timeout's TERM still packs
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$out/gpu.txt"
if ! .device/lcsm_tests_cuda --list-tests >/dev/null 2>&1; then
  echo "carried binaries do not start here; adding the fallback libstdc++"
  cp .device/lib/libstdc++.so.6.fallback .device/lib/libstdc++.so.6
fi
stage_tests() {
  echo "== tests"
  .device/lcsm_tests_cuda --rng-seed time -r compact "~[long]" >"$out/tests.txt" 2>&1 || status=1
  tail -n 3 "$out/tests.txt"
  # bf16 again on the portable (mma.sync) kernels, which the sm_90a kernels replace for bf16 on Hopper.
  LCSM_TEST_KERNELS=portable LCSM_TEST_DTYPES=bf16 .device/lcsm_tests_cuda --rng-seed time -r compact "~[long]" \
    >"$out/tests_portable.txt" 2>&1 || status=1
  echo "portable kernels: $(tail -n 2 "$out/tests_portable.txt" | tr '\n' ' ')"
  LCSM_LONG_T=${LCSM_LONG_T:-1048576} .device/lcsm_tests_cuda --rng-seed time -s "[long]" >"$out/long.txt" 2>&1 || status=1
  grep -E "1M-token check|passed|failed" "$out/long.txt" | tail -n 5
  # Sequence parallelism's NCCL front-end on this machine's GPUs (libnccl: the toolkit's, or PyTorch's wheel).
  if [ -x .device/lcsm_tests_nccl ]; then
    nccl_dirs=$(python3 -c "import glob, os, torch; print(':'.join(sorted({os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib', 'libnccl.so*'))})))" 2>/dev/null)
    NCCL_NVLS_ENABLE=0 LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$nccl_dirs" .device/lcsm_tests_nccl >"$out/nccl.txt" 2>&1 || status=1
    tail -n 6 "$out/nccl.txt"
  fi
  # lcsm-ref's conformance set on the CUDA backend (what it lacks is skipped, each said).
  if [ -x .device/lcsm-ref ]; then
    .device/lcsm-ref run --device cuda --batch tools/conformance.txt --repeat 1 >"$out/conformance_cuda.txt" 2>&1 || status=1
    echo "lcsm-ref --device cuda: $(tail -n 1 "$out/conformance_cuda.txt")"
  fi
}
stage_sanitize() {
  echo "== compute-sanitizer"
  subset='lightning forward: head dimensions,lightning forward: varlen with per-sequence states,lightning decode: many sequences*,lightning forward: sequence lengths around the tile'
  subset="$subset,gated forward: head dimensions,gated forward: varlen with per-sequence states,gated decode: many sequences*"
  subset="$subset,gated forward: K = V = 128*"
  subset="$subset,cosformer forward: head dimensions,cosformer forward: varlen with per-sequence states,cosformer decode*,cosformer backward: varlen and strided memory"
  subset="$subset,lightning backward: varlen and strided memory,gated backward: varlen and strided memory"
  subset="$subset,toeplitz forward: varlen sequences are convolved separately,toeplitz forward: NaN and Inf*,toeplitz decode*,toeplitz backward: NaN in dy*,toeplitz backward: lengths*"
  # bf16 runs the sm_90a kernels (lightning, scalar gate, vector gate at K = 128 with its mma.sync
  # fallback) and the mma.sync kernel (the vector gate's other K); float32 the mma.sync kernels with
  # split inputs.
  for tool in ${LCSM_SANITIZE_TOOLS:-memcheck racecheck}; do
    LCSM_TEST_DTYPES=${LCSM_SANITIZE_DTYPES:-bf16,f32} timeout ${LCSM_SANITIZE_TIMEOUT:-300} \
      compute-sanitizer --tool "$tool" --error-exitcode 9 .device/lcsm_tests_cuda \
      --rng-seed 1 "$subset" >"$out/sanitize_$tool.txt" 2>&1
    rc=$?
    echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_$tool.txt" | tail -n 1)"
    [ $rc -eq 0 ] || status=1
  done
}
stage_bench() {
  echo "== benchmarks"
  .device/lcsm_bench_cuda --benchmark_out="$out/bench.json" --benchmark_out_format=json \
    --benchmark_filter="${LCSM_BENCH_FILTER:-.}" --benchmark_min_time=0.2 >"$out/bench.txt" 2>&1 || status=1
  grep -E "^BM_" "$out/bench.txt" | sed -E 's/ +/ /g' | cut -c1-200
}
stage_demo() {
  echo "== demo"
  .device/demo_cuda >"$out/demo_cuda.txt" 2>&1 || status=1
  cat "$out/demo_cuda.txt"
}
stage_peers() {
  echo "== peers"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site
  PYTHONUNBUFFERED=1 python3 .device/gpu_peers.py --lib .device/liblcsm_capi.so --json "$out/peers.json" ${LCSM_PEERS_ARGS:-} \
    >"$out/peers.txt" 2>&1 || status=1
  cat "$out/peers.txt" | tail -n 20
}
[[ " $stages " == *" all "* ]] && stages="tests sanitize bench demo peers"
for stage in $stages; do
  case $stage in
    tests | sanitize | bench | demo | peers) "stage_$stage" ;;
    *) echo "unknown stage $stage" >&2 && status=1 ;;
  esac
done
exit $status
