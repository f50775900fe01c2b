#!/usr/bin/env bash
# Builds everything the GPU round trip runs, here (no GPU needed), into .device/ at the repo root:
# the CUDA test runner, the CUDA benchmarks, the peers script's C ABI library, lcsm-ref, the GPU demo, the runtime
# libraries they need, and fla's wheels. Then run scripts/gpu_run.sh on the GPU machine with
# .device.tar.xz and .whl carried (docs/gpu.md says how).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${LCSM_DEVICE_BUILD:-build-device}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCSM_ENABLE_CUDA=ON -DLCSM_BUILD_BENCH=ON \
  -DLCSM_BUILD_EXAMPLES=ON -DCMAKE_CUDA_ARCHITECTURES=90a-real -DCMAKE_CUDA_RUNTIME_LIBRARY=Static \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" >/dev/null
ninja -C "$build" lcsm_tests_cuda lcsm_tests_nccl lcsm_bench_cuda lcsm_capi lcsm_ref lcsm_demo_cuda
rm -rf .device && mkdir -p .device/lib
cp "$build/tests/cuda/lcsm_tests_cuda" "$build/tests/cuda/lcsm_tests_nccl" "$build/bench/cuda/lcsm_bench_cuda" \
  "$build/bench/cuda/liblcsm_capi.so" "$build/tools/lcsm-ref" "$build/examples/demo_cuda" .device/
cp bench/peers/gpu_peers.py scripts/gpu_run.sh .device/
cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian .device/lib/ 2>/dev/null || true
cp -L /usr/lib/x86_64-linux-gnu/libstdc++.so.6 .device/lib/libstdc++.so.6.fallback
# fla (pure Python on Triton) as wheels; the GPU machine has torch and triton already.
if ! ls .whl/fla_core-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform any -d .whl flash-linear-attention fla-core
fi
# The binaries outgrow the device tool's 64 MiB carry limit; their xz archive is a seventh of it
# (gpu_run.sh unpacks it when .device is absent): carry .device.tar.xz and .whl.
tar -cf - .device | xz -T2 -6 >.device.tar.xz
grep -qx '/.device.tar.xz' .git/info/exclude || echo '/.device.tar.xz' >>.git/info/exclude
grep -qx '/.device/' .git/info/exclude || echo '/.device/' >>.git/info/exclude
grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >>.git/info/exclude
du -sh .device .device.tar.xz .whl
