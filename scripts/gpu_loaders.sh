#!/usr/bin/env bash
# Issue 11's loader question in one GPU call (docs/gpu.md): which way of filling the sm_90a kernel's
# ring streams fastest, and is it correct. Builds here, runs there:
#   here:  scripts/gpu_loaders.sh prepare   (~15 min on 2 cores: .device.tar.xz with a test binary per
#                                            knob set, .ab.tar.xz with the four benchmark variants)
#   there: scripts/gpu_loaders.sh run       (carry .device.tar.xz and .ab.tar.xz; ~7 min)
# Stages, most decisive first, each packed into $OUT/results.tgz as it ends (a cut call keeps them):
# the 5-D map probe, the ceilings (BM_loader_ceiling, BM_read_ceiling), the A/B of cp.async / 5-D TMA
# / swizzled cp.async / swizzled TMA, the bf16 suite on the swizzled-TMA and the 5-D-TMA builds,
# racecheck and memcheck on the swizzled build, the f16/f32 suite, Nsight Compute of two variants.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tma='-DLCSM_CUDA_SM90_TMA=1' sw='-DLCSM_CUDA_SM90_SWIZZLE=1 -DLCSM_CUDA_SM90_TMA=1'
case "${1:-}" in
  prepare)
    set -e
    cmake -S . -B build-device -G Ninja -DCMAKE_CUDA_FLAGS="$tma" >/dev/null
    LCSM_DEVICE_BUILD=build-device bash scripts/gpu_prepare.sh
    cmake -S . -B build-sw -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCSM_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a-real \
      -DCMAKE_CUDA_RUNTIME_LIBRARY=Static -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" \
      -DCMAKE_CUDA_FLAGS="$sw" >/dev/null
    ninja -C build-sw lcsm_tests_cuda
    cp build-sw/tests/cuda/lcsm_tests_cuda .device/lcsm_tests_cuda_sw
    tar -cf - .device | xz -T2 -6 >.device.tar.xz
    grep -qx '/build-sw/' .git/info/exclude || echo '/build-sw/' >>.git/info/exclude
    bash scripts/gpu_ab.sh build cp= tma="$tma" sw='-DLCSM_CUDA_SM90_SWIZZLE=1' swtma="$sw"
    ;;
  run)
    out=${OUT:-/tmp/lcsm-out}
    R=$out/r
    mkdir -p "$R"
    t0=$(date +%s)
    el() { echo "[$(($(date +%s) - t0)) s] $*"; }
    pack() { tar -C "$out" -czf "$out/results.tgz" r 2>/dev/null; }
    export LD_LIBRARY_PATH="$PWD/.device/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    python3 -c "import tarfile; tarfile.open('.device.tar.xz').extractall(); tarfile.open('.ab.tar.xz').extractall()"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$R/gpu.txt"
    .device/lcsm_tests_cuda --list-tests >/dev/null 2>&1 ||
      cp .device/lib/libstdc++.so.6.fallback .device/lib/libstdc++.so.6
    ab=(env LD_LIBRARY_PATH=".ab:$LD_LIBRARY_PATH")
    el "map probes"
    for b in lcsm_tests_cuda lcsm_tests_cuda_sw; do
      .device/$b -s "[tma]" >"$R/probe_$b.txt" 2>&1
      tail -n 2 "$R/probe_$b.txt"
    done
    el "ceilings"
    timeout 60 "${ab[@]}" .ab/lb_cp --benchmark_filter='BM_loader_ceiling|BM_read_ceiling|BM_copy' \
      --benchmark_min_time=0.05 >"$R/ceilings.txt" 2>&1
    grep -E "^BM_" "$R/ceilings.txt" | sed -E 's/ +/ /g' | cut -c1-150
    pack
    el "A/B"
    LCSM_AB_FILTER="BM_copy|BM_forward(_fast)?<__nv_bfloat16>|BM_forward_passes|BM_decode" OUT=$R \
      timeout 150 bash scripts/gpu_ab.sh run "${LCSM_AB_ROUNDS:-1}" >"$R/ab.txt" 2>&1
    tail -n 22 "$R/ab.txt"
    grep -h "BM_decode" "$R"/ab/*_1.txt | sed -E 's/ +/ /g' | cut -c1-90
    pack
    for b in lcsm_tests_cuda_sw lcsm_tests_cuda; do
      el "bf16 suite, $b"
      LCSM_TEST_DTYPES=bf16 timeout 80 .device/$b --rng-seed time -r compact "~[long]" >"$R/suite_$b.txt" 2>&1
      echo "rc $?"
      grep -E "failed" "$R/suite_$b.txt" | head -8 | cut -c1-300
      tail -n 2 "$R/suite_$b.txt"
      pack
    done
    el "sanitizers, swizzled build"
    subset='lightning forward: head dimensions,gated forward: head dimensions,lightning forward: varlen with per-sequence states'
    for tool in racecheck memcheck; do
      LCSM_TEST_DTYPES=bf16 timeout 55 compute-sanitizer --tool $tool --error-exitcode 9 .device/lcsm_tests_cuda_sw \
        --rng-seed 1 "$subset" >"$R/san_$tool.txt" 2>&1
      echo "$tool rc $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$R/san_$tool.txt" | tail -n 1)"
    done
    pack
    el "f16/f32 suite"
    LCSM_TEST_DTYPES=f16,f32 timeout 100 .device/lcsm_tests_cuda --rng-seed time -r compact "~[long]" \
      >"$R/tests_f.txt" 2>&1
    echo "rc $?"
    tail -n 2 "$R/tests_f.txt"
    pack
    el "ncu"
    for v in cp swtma; do
      timeout 40 "${ab[@]}" ncu --kernel-name regex:chunk_kernel_sm90 --launch-skip 4 --launch-count 2 \
        --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis .ab/lb_$v \
        --benchmark_filter='BM_forward_fast<__nv_bfloat16>/B:1/T:65536' --benchmark_min_time=0.001 >"$R/ncu_$v.txt" 2>&1
      grep -E "chunk_kernel|Duration|DRAM Throughput|L2 Cache Throughput|Issue Slots|Stall" "$R/ncu_$v.txt" | head -24
    done
    pack
    el "end"
    ;;
  *)
    echo "usage: scripts/gpu_loaders.sh prepare|run" >&2
    exit 2
    ;;
esac
