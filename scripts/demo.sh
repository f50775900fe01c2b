#!/usr/bin/env bash
# Builds the demo (examples/) in Release for this machine's CPU (-DLCSM_NATIVE=ON) and runs it:
# lightning attention forward, backward and decode at T = 65536, H = 16, K = V = 128, timed and
# checked against the float64 reference. Installs what is missing first (scripts/deps.sh).
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
