#!/usr/bin/env bash
# Downloads the Debian packages of scripts/gpu/debs.txt into .device/debs (ignored by git), on a
# machine that reaches Debian's archive, for a GPU machine that does not (see build.sh).
#   scripts/gpu/fetch_debs.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/.device/debs}
mkdir -p "$out"
packages=$(grep -v '^#' "$root/scripts/gpu/debs.txt" | tr '\n' ' ')
(cd "$out" && apt-get download $packages)
echo "fetch_debs: $(ls "$out"/*.deb | wc -l) packages, $(du -sh "$out" | cut -f1) in $out"
