#!/usr/bin/env bash
# Runs on the GPU machine (carry .device): Nsight Compute on single launches of the CUDA benchmarks,
# to see where a kernel's time goes (achieved bandwidth, tensor-pipe use, stall reasons).
#   usage: scripts/gpu_profile.sh 'BENCHMARK_REGEX|KERNEL_REGEX|LAUNCH_SKIP|NAME' ...
# e.g. 'BM_scalar_gate_forward<bf16>/B:1/T:65536/|chunk_kernel_sm90|1|scalar64k' profiles the second
# sm90 chunk launch (the output pass of the warm-up call) and writes $OUT/scalar64k.txt.
# KERNEL_REGEX matches the demangled base name; prefix it with 'mangled:' to match the mangled name
# (one template instance: 'mangled:DecayKindE0ELb1ELb0ELb1E' is chunk_kernel_sm90<head, true, false,
# true>). LCSM_PROFILE_SOURCE=1 also samples stalls per SASS instruction: $OUT/NAME.sass.csv (ncu's
# source page) and the 25 instructions with the most stall samples on stdout.
set -uo pipefail
out=${OUT:-/tmp/lcsm-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/.device/lib:${LD_LIBRARY_PATH:-}"
.device/lcsm_bench_cuda --benchmark_list_tests >/dev/null 2>&1 || cp .device/lib/libstdc++.so.6.fallback .device/lib/libstdc++.so.6
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
sections="--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section InstructionStats --section LaunchStats --section Occupancy"
# Stall reasons: warps stalled per issued instruction, by reason.
stalls=""
for r in barrier long_scoreboard short_scoreboard wait math_pipe_throttle mio_throttle lg_throttle membar sleeping \
  dispatch_stall no_instruction not_selected selected misc branch_resolving drain imc_miss tex_throttle; do
  stalls="$stalls,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
sections="$sections --metrics ${stalls#,}"
for spec in "$@"; do
  IFS='|' read -r bench kernel skip name <<<"$spec"
  base=()
  if [[ $kernel == mangled:* ]]; then kernel=${kernel#mangled:} base=(--kernel-name-base mangled); fi
  if [ "${LCSM_PROFILE_SOURCE:-0}" = 1 ]; then
    timeout ${LCSM_PROFILE_TIMEOUT:-120} "$ncu" --clock-control none $sections --section SourceCounters \
      "${base[@]}" --kernel-name "regex:$kernel" --launch-skip "$skip" --launch-count 1 -f -o "$out/$name" \
      .device/lcsm_bench_cuda --benchmark_filter="$bench" --benchmark_min_time=0.001 >"$out/$name.log" 2>&1
    echo "== $name (exit $?)"
    "$ncu" -i "$out/$name.ncu-rep" --page details >"$out/$name.txt" 2>&1
    "$ncu" -i "$out/$name.ncu-rep" --page source --csv --print-source sass >"$out/$name.sass.csv" 2>&1
    rm -f "$out/$name.ncu-rep"  # 5 MB, and the device tool returns 8 files: the pages above are kept
    python3 - "$out/$name.sass.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head = next((i for i, r in enumerate(rows) if any("Warp Stall Sampling (All" in c for c in r)), None)
if head is None:
    print("  (no stall sampling column)"); sys.exit()
cols = rows[head]
at = next(i for i, c in enumerate(cols) if "Warp Stall Sampling (All" in c)
src = next((i for i, c in enumerate(cols) if c.strip() in ("Source", "# Source")), 1)
addr = next((i for i, c in enumerate(cols) if "Address" in c), 0)
body = [r for r in rows[head + 1:] if len(r) > at and r[at].replace(",", "").strip().isdigit()]
total = sum(int(r[at].replace(",", "")) for r in body) or 1
for r in sorted(body, key=lambda r: -int(r[at].replace(",", "")))[:25]:
    n = int(r[at].replace(",", ""))
    print(f"  {100 * n / total:5.1f}%  {r[addr]:>8}  {r[src].strip()[:90]}")
PY
  else
    timeout ${LCSM_PROFILE_TIMEOUT:-120} "$ncu" --clock-control none $sections "${base[@]}" --kernel-name "regex:$kernel" \
      --launch-skip "$skip" --launch-count 1 .device/lcsm_bench_cuda --benchmark_filter="$bench" \
      --benchmark_min_time=0.001 >"$out/$name.txt" 2>&1
    echo "== $name (exit $?)"
  fi
  grep -E "stalled_.*ratio" "$out/$name.txt" | awk '$NF+0 > 0.2 {sub(/smsp__average_warps_issue_stalled_/, "", $1); print "  stall", $1, $NF}'
  grep -E "^\s+(Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Registers Per Thread|Executed Ipc Active|Issue Slots Busy|No Eligible|Warp Cycles Per Issued Instruction|Achieved Occupancy)" "$out/$name.txt" | sed -E 's/ +/ /g'
done
