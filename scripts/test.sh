#!/usr/bin/env bash
# Builds lcsm and runs its test suite: installs what is missing (scripts/deps.sh), configures
# $LCSM_BUILD_DIR (default build/, relative to the repository root) with Ninja, builds and runs
# ctest (the CPU suite, and lcsm-ref's tests). Exits non-zero on any failure.
#
# Where CMake finds nvcc (on PATH, or CUDACXX) the CUDA test runner and CUDA examples are
# built too, but CUDA tests are only registered with CTest when LCSM_TEST_CUDA=ON (a machine with a
# GPU): LCSM_CMAKE_ARGS="-DLCSM_TEST_CUDA=ON" scripts/test.sh.
#
# Environment: LCSM_BUILD_DIR (build), LCSM_BUILD_TYPE (Release), LCSM_CMAKE_ARGS (extra cmake
# arguments, split on spaces), LCSM_TEST_JOBS (2), LCSM_SKIP_DEPS=1 (do not install packages).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# lcsm-ref (tools/) and its tests need CLI11, nlohmann/json and NumPy; without them CMake skips it.
scripts/deps.sh libcli11-dev nlohmann-json3-dev python3-numpy

build=${LCSM_BUILD_DIR:-build}
read -r -a extra <<<"${LCSM_CMAKE_ARGS:-}"
generator=()
[ -f "$build/CMakeCache.txt" ] || generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE="${LCSM_BUILD_TYPE:-Release}" -DLCSM_BUILD_TESTS=ON \
  ${extra[@]+"${extra[@]}"}
cmake --build "$build"
ctest --test-dir "$build" --output-on-failure -j"${LCSM_TEST_JOBS:-2}"
