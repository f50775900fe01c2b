#!/usr/bin/env bash
# Re-runs the mutation list of docs/mutations.md: for each mutation, applies it to its file (one perl
# substitution, which must match), rebuilds the CPU test binary in $LCSM_MUTATION_BUILD (default
# build-mutations: Release, CPU only), runs the tests that must catch it (Catch2 filter, stopping at
# the first failure) and restores the file. Prints "caught" or "NOT CAUGHT" per mutation and exits 1
# if any was not caught. The files a mutation touches must be unmodified in git (they are restored
# with git checkout).
#
#   scripts/mutations.sh              # all of them (each rebuild: ~3-4 minutes on 2 cores)
#   scripts/mutations.sh scale-lightning decay-rounded   # some
#   scripts/mutations.sh --list
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${LCSM_MUTATION_BUILD:-build-mutations}
jobs=${LCSM_MUTATION_JOBS:-2}

# name | file | perl substitution (first match only; no '|') | Catch2 test filter (no commas: Catch2 splits on them)
mutations=(
  'scale-lightning|include/lcsm/cpu/lightning.hpp|s/op\.chunk, op\.scale_for\(p\.key_dim\), &op\.log_decay\}/op.chunk, 1.0 \/ std::sqrt(static_cast<double>(p.key_dim)), &op.log_decay}/|lightning forward: the scale'
  'scale-gated|include/lcsm/cpu/gated.hpp|s/op\.chunk, sub, op\.scale_for\(p\.key_dim\)\}/op.chunk, sub, 1.0 \/ std::sqrt(static_cast<double>(p.key_dim))}/|gated forward: the scale'
  'scale-gated-decode|include/lcsm/cpu/gated.hpp|s/with_unit_key\(op\.log_gate\), op\.scale_for\(p\.key_dim\)\)/with_unit_key(op.log_gate), 1.0 \/ std::sqrt(static_cast<double>(p.key_dim)))/|gated decode: many sequences*'
  'sub-chunk-product|include/lcsm/cpu/gated_vector.hpp|s/ws\.w = ws\.w\.cwiseProduct\(ws\.decay\.row\(i\)\);/ws.w = ws.decay.row(i);/|gated backward: the gate gradient agrees with finite differences'
  'cos-eps|include/lcsm/cpu/cosformer.hpp|s/FeatureMap::relu, op\.eps\};/FeatureMap::relu, 1e-6};/|cosformer forward and decode: the denominator*'
  'cos-eps-decode|include/lcsm/cpu/cosformer.hpp|s/const S eps = static_cast<S>\(op\.eps\);/const S eps = static_cast<S>(1e-6);/|cosformer forward and decode: the denominator*'
  'toeplitz-threshold|include/lcsm/ops/toeplitz.hpp|s/\(causal \? direct_max_length : direct_max_length \/ 2\)/(causal ? 48 : 24)/|toeplitz forward: the automatic path follows direct_max_length'
  'third-segment|include/lcsm/cpu/segment_scan.hpp|s/f\.decay\(init, n, h, b\[s\], b\[s \+ 1\]\);/f.decay(init, n, h, b[s], b[std::min<index_t>(s + 1, 1)]);/|segments: 3*'
  'decay-rounded|include/lcsm/cpu/chunked.hpp|s/else m \+= m \* f\.xm1;/else m *= f.x;/|[accuracy]'
  'decay-expm1-always|include/lcsm/cpu/chunked.hpp|s/ \W\W f\.x < S\(0\.5\)\) m \*= f\.x;/) m *= f.x;/|gated backward: shapes*'
  'aliasing-off|include/lcsm/core/validate.hpp|s/void check\(\) const \{/void check() const { if (count_ >= 0) return;/|arguments: every output overlapping any other argument*'
  'in-place-loose|include/lcsm/core/validate.hpp|s/if \(in_place && same_view\(o, x\)\) continue;/if (in_place) continue;/|arguments: the final state exactly over the initial state is in place'
  'cu-seqlens-unlisted|include/lcsm/ops/problem.hpp|s/  ops\.in\("cu_seqlens", cu\);\n  p\.sequences/  p.sequences/|arguments: an output over cu_seqlens*'
  'd-log-gate-unlisted|include/lcsm/cpu/gated.hpp|s/ops\.in\("op\.log_gate", op\.log_gate\)\.out\("d_log_gate", d_log_gate\);/ops.in("op.log_gate", op.log_gate);/|arguments: every output overlapping any other argument*'
  'position-wraps|include/lcsm/ops/cosformer.hpp|s/if \(detail::add_overflows\(first, tokens, end\)\)/if ((end = static_cast<index_t>(static_cast<std::uint64_t>(first) + static_cast<std::uint64_t>(tokens))) < 0 \&\& false)/|arguments: positions near INT64_MAX are errors'
  'gate-floor|include/lcsm/ops/gated.hpp|s/const G lowest = static_cast<G>\(decay::min_log\);/const G lowest = std::numeric_limits<G>::lowest();/|limits: gates and decays below -1000*'
  'decay-floor|include/lcsm/ops/lightning.hpp|s/log_decay\[h\] >= decay::min_log/std::isfinite(log_decay[h])/|limits: gates and decays below -1000*'
  'thread-cap|include/lcsm/cpu/device.hpp|s/if \(threads > 0\) return std::min\(threads, max_threads\);/if (threads > 0) return threads;/|limits: thread counts are capped'
)

if [ "${1:-}" = --list ]; then
  for m in "${mutations[@]}"; do IFS='|' read -r name file _ filter <<<"$m"; printf '%-22s %-38s %s\n' "$name" "$file" "$filter"; done
  exit 0
fi
wanted=("$@")

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCSM_ENABLE_CUDA=OFF \
  -DLCSM_BUILD_BENCH=OFF -DLCSM_BUILD_EXAMPLES=OFF -DLCSM_BUILD_TOOLS=OFF >/dev/null

current=""
restore() { [ -z "$current" ] || git checkout -q -- "$current"; }
trap restore EXIT

missed=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name file subst filter <<<"$m"
  if [ ${#wanted[@]} -gt 0 ] && ! printf '%s\n' "${wanted[@]}" | grep -qxF -- "$name"; then continue; fi
  if ! git diff --quiet -- "$file"; then echo "$name: $file has local changes; commit or stash them first" >&2; exit 2; fi
  current=$file
  before=$(sha1sum "$file")
  perl -0pi -e "$subst" "$file"
  if [ "$(sha1sum "$file")" = "$before" ]; then echo "$name: the substitution did not match $file" >&2; exit 2; fi
  echo "--- $name: $file"
  git diff -U0 -- "$file" | grep -E '^[-+][^-+]' || true
  if ! nice cmake --build "$build" -j"$jobs" --target lcsm_tests >"$build/mutation-build.log" 2>&1; then
    echo "$name: does not compile (see $build/mutation-build.log)" >&2
    exit 2
  fi
  if ! "$build/tests/lcsm_tests" "$filter" --list-test-names-only | grep -q .; then
    echo "$name: no test matches '$filter'" >&2
    exit 2
  fi
  if "$build/tests/lcsm_tests" "$filter" --abort >"$build/mutation-$name.log" 2>&1; then
    echo "$name: NOT CAUGHT by '$filter'"
    missed=$((missed + 1))
  else
    echo "$name: caught by '$filter' ($(grep -cE ': FAILED:' "$build/mutation-$name.log" || true) failed assertion(s) before the abort)"
  fi
  git checkout -q -- "$file"
  current=""
done
# Leave the build matching the sources.
nice cmake --build "$build" -j"$jobs" --target lcsm_tests >/dev/null 2>&1 || true
[ $missed -eq 0 ]
