#!/usr/bin/env bash
# encode_bench.sh — images per second of `dtdata encode` at 256 px on this machine's CPUs: the SDXL
# VAE's encoder and CLIP ViT-L/14's text tower (random weights at the real configurations, made by
# tests/models/fixtures/make_encoder_fixtures.py --bench-weights), on 1 and 2 ranks.
#
#   bench/encode_bench.sh WEIGHTS_DIR [IMAGES]     (IMAGES default 32; 320 x 256 PNGs, one caption each)
#
# Prints one line per rank count; record them in bench/RESULTS.md with the date and the machine.
set -euo pipefail
weights=${1:?usage: bench/encode_bench.sh WEIGHTS_DIR [IMAGES]}
n=${2:-32}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dtdata=${DTDATA:-$here/build/tools/dtdata}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 - "$work/images" "$n" <<'PY'
import os, struct, sys, zlib
import numpy as np
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
def png(path, a):
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
rng = np.random.default_rng(0)
for i in range(n):
    png(f"{out}/{i:05d}.png", rng.integers(0, 256, (256, 320, 3), dtype=np.uint8))
    with open(f"{out}/{i:05d}.txt", "w") as f:
        f.write(f"a photograph of {i} wooden chairs around a round table in a sunny garden, high detail\n")
PY
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cores=$(nproc)
for ranks in 1 2; do
  start=$(date +%s.%N)
  mpirun --oversubscribe -n "$ranks" "$dtdata" encode --images "$work/images" --vae "$weights/vae" \
    --text-encoder "$weights/text_encoder" --resolution 256 --images-per-shard 8 --batch 4 \
    --threads $((cores / ranks)) --out "$work/out-$ranks" > "$work/log-$ranks" 2>&1 || { cat "$work/log-$ranks"; exit 1; }
  end=$(date +%s.%N)
  awk -v n="$n" -v r="$ranks" -v s="$start" -v e="$end" -v c="$cores" \
    'BEGIN { printf "encode 256 px, SDXL VAE + CLIP-L: %d rank(s) x %d thread(s): %d images in %.1f s = %.2f images/s\n", r, c / r, n, e - s, n / (e - s) }'
done
