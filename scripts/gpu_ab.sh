#!/usr/bin/env bash
# A/B of compile-time variants of the sm_90a forward (docs/gpu.md): the lightning benchmarks (bf16
# only: BM_forward exact and fast, BM_forward_passes) built once per variant here, run alternately
# in one process each on the GPU machine, so that the variants share a session and its clocks.
#   here:  scripts/gpu_ab.sh build NAME='-DMACRO=1 ...' [NAME='...' ...]   -> .ab/, .ab.tar.xz
#          (LCSM_AB_EXTRA: more benchmark sources, e.g. bench/cuda/gated_bench.cu for the scalar gate;
#          LCSM_AB_APPEND=1: keep the variants already in .ab/)
#   there: scripts/gpu_ab.sh run [ROUNDS]                                   (carry .ab.tar.xz)
# Run's environment: LCSM_AB_FILTER (a --benchmark_filter regex), LCSM_AB_MIN_TIME (default 0.05).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
  build)
    shift
    # LCSM_AB_APPEND=1 adds variants to the ones already built.
    [ "${LCSM_AB_APPEND:-0}" = 1 ] || rm -rf .ab
    mkdir -p .ab
    for spec in "$@"; do
      name=${spec%%=*} flags=${spec#*=}
      # shellcheck disable=SC2086  # the flags are words
      nvcc -O3 -std=c++17 -I include -I bench/cuda -isystem /usr/include/eigen3 -DNDEBUG -DLCSM_BENCH_BF16_ONLY \
        --generate-code=arch=compute_90a,code=[sm_90a] $flags -Xcompiler=-static-libstdc++,-static-libgcc \
        -o ".ab/lb_$name" bench/cuda/main.cu bench/cuda/lightning_bench.cu bench/cuda/stream_bench.cu ${LCSM_AB_EXTRA:-} \
        -lbenchmark -lpthread
      echo "$name: $flags" >>.ab/variants.txt
      echo "built .ab/lb_$name"
    done
    cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian .ab/ 2>/dev/null || true
    tar -cJf .ab.tar.xz .ab
    grep -qx '/.ab/' .git/info/exclude 2>/dev/null || echo '/.ab/' >>.git/info/exclude
    grep -qx '/.ab.tar.xz' .git/info/exclude 2>/dev/null || echo '/.ab.tar.xz' >>.git/info/exclude
    du -sh .ab.tar.xz
    ;;
  run)
    rounds=${2:-2}
    [ -f .ab.tar.xz ] && { rm -rf .ab; python3 -c "import tarfile; tarfile.open('.ab.tar.xz').extractall()"; }
    export LD_LIBRARY_PATH="$PWD/.ab:${LD_LIBRARY_PATH:-}"
    out=${OUT:-/tmp/lcsm-out}
    mkdir -p "$out/ab"
    filter=${LCSM_AB_FILTER:-'BM_copy|BM_forward(_fast)?<__nv_bfloat16>|BM_forward_passes'}
    for ((r = 1; r <= rounds; ++r)); do
      for exe in .ab/lb_*; do
        name=${exe#.ab/lb_}
        "$exe" --benchmark_filter="$filter" --benchmark_min_time="${LCSM_AB_MIN_TIME:-0.05}" \
          >"$out/ab/${name}_$r.txt" 2>&1 || echo "$name round $r failed"
      done
    done
    cat .ab/variants.txt
    # One line per benchmark: each variant's median of its rounds (ms), then the passes' split.
    python3 - "$out/ab" <<'PY'
import glob, os, re, statistics, sys
runs = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*_*.txt"))):
    name = os.path.basename(path).rsplit("_", 1)[0]
    for line in open(path):
        m = re.match(r"(BM_\S+)\s+([\d.]+) (ms|us)", line)
        if not m:
            continue
        key = m.group(1).replace("/manual_time", "")
        extra = " ".join(x for x in line.split() if x.startswith(("delta_ms=", "output_ms=")))
        runs.setdefault(key, {}).setdefault(name, []).append((float(m.group(2)) / (1000.0 if m.group(3) == "us" else 1.0), extra))
names = sorted({n for v in runs.values() for n in v})
print("benchmark".ljust(60) + "".join(n.rjust(10) for n in names))
for key, by in runs.items():
    cells = [f"{statistics.median(t for t, _ in by[n]):.3f}" if n in by else "-" for n in names]
    print(key.ljust(60) + "".join(c.rjust(10) for c in cells))
    for n in names:
        if n in by and by[n][0][1]:
            print("    " + n + ": " + by[n][-1][1])
PY
    ;;
  *)
    sed -n 2,7p "$0"
    exit 2
    ;;
esac
