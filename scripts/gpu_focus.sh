#!/usr/bin/env bash
# One GPU call for one piece of work (docs/gpu.md): the CUDA test runner and benchmarks of the
# device build, a chosen part of the suite (every dtype, then bf16 under memcheck and racecheck) and
# chosen benchmarks, without the full round trip of gpu_run.sh.
#   here:  scripts/gpu_focus.sh pack        (after ninja -C build-device lcsm_tests_cuda lcsm_bench_cuda)
#          -> .focus.tar.xz
#   there: scripts/gpu_focus.sh run 'TEST SPEC' 'SANITIZE SPEC' 'BENCH REGEX'   (carry .focus.tar.xz)
# Catch2 specs: names with wildcards joined by commas, tags in brackets. Output under $OUT.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
  pack)
    build=${LCSM_DEVICE_BUILD:-build-device}
    rm -rf .focus && mkdir -p .focus
    cp "$build/tests/cuda/lcsm_tests_cuda" "$build/bench/cuda/lcsm_bench_cuda" .focus/
    cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian .focus/ 2>/dev/null || true
    tar -cf - .focus | xz -T2 -6 >.focus.tar.xz
    for f in /.focus/ /.focus.tar.xz; do grep -qx "$f" .git/info/exclude || echo "$f" >>.git/info/exclude; done
    du -sh .focus.tar.xz
    ;;
  run)
    out=${OUT:-/tmp/lcsm-out}
    mkdir -p "$out"
    rm -rf .focus && python3 -c "import tarfile; tarfile.open('.focus.tar.xz').extractall()"
    cufft=$(python3 -c "import glob, os, torch; print(':'.join(sorted({os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib', 'libcufft.so*'))})))" 2>/dev/null || true)
    export LD_LIBRARY_PATH="$PWD/.focus:/usr/local/cuda/lib64:$cufft:${LD_LIBRARY_PATH:-}"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader | tee "$out/gpu.txt"
    timeout "${LCSM_FOCUS_TEST_TIMEOUT:-240}" .focus/lcsm_tests_cuda --rng-seed time -r compact "$2" \
      >"$out/focus_tests.txt" 2>&1
    echo "tests: exit $?; $(tail -n 2 "$out/focus_tests.txt" | tr '\n' ' ')"
    grep -A14 -E "FAILED|failed:" "$out/focus_tests.txt" | head -n 80
    for tool in memcheck racecheck; do
      LCSM_TEST_DTYPES=bf16 timeout "${LCSM_FOCUS_SANITIZE_TIMEOUT:-150}" compute-sanitizer --tool "$tool" \
        --error-exitcode 9 .focus/lcsm_tests_cuda --rng-seed 1 "$3" >"$out/focus_$tool.txt" 2>&1
      echo "$tool: exit $?; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/focus_$tool.txt" | tail -n 1)"
    done
    timeout "${LCSM_FOCUS_BENCH_TIMEOUT:-200}" .focus/lcsm_bench_cuda --benchmark_filter="$4" \
      --benchmark_min_time="${LCSM_FOCUS_MIN_TIME:-0.1}" >"$out/focus_bench.txt" 2>&1
    grep -E "^BM_" "$out/focus_bench.txt" | sed -E 's/ +/ /g' | cut -c1-170
    ;;
  *)
    sed -n 2,8p "$0"
    exit 2
    ;;
esac
