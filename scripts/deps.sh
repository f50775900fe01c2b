#!/usr/bin/env bash
# Installs what lcsm's build needs on Debian/Ubuntu, and only what is missing (so it costs nothing
# on a prepared machine): cmake, ninja-build, g++, libeigen3-dev, catch2, libbenchmark-dev, plus
# any extra package names given as arguments. Runs apt-get as root, or through sudo.
# Set LCSM_SKIP_DEPS=1 to skip it (a machine set up some other way).
#   usage: scripts/deps.sh [extra-package...]
set -euo pipefail
[ "${LCSM_SKIP_DEPS:-0}" = 1 ] && exit 0

wanted=(cmake ninja-build g++ libeigen3-dev catch2 libbenchmark-dev "$@")
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${wanted[@]}"; do installed "$p" || missing+=("$p"); done
else
  echo "deps.sh: not a Debian-like system (no dpkg-query); install these yourself: ${wanted[*]}" >&2
  exit 0
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "deps.sh: missing ${missing[*]}, and not root and no sudo to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
