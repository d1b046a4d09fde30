#!/usr/bin/env bash
# side_by_side.sh — dtrainer's training step against PyTorch-Python's, on the same UNet, interleaved.
#
#   DIFFUSERS_SRC=/path/to/diffusers/src bench/peer/side_by_side.sh [--threads "1 2"] [--pairs 2]
#                                                                    [--models small,sdxl-c128]
#
# For each model and thread count it runs `dtbench train` (dtrainer, C++) and
# bench/peer/diffusers_unet_step.py (diffusers' UNet2DConditionModel, Python, eager) one after the
# other, A B A B (--pairs times), so that a slow minute of the machine hits both alike, and prints per
# model the median step time of each and their ratio (dtrainer / Python; below 1: dtrainer is faster).
# Both sides: fp32, one process, the same latent / text shapes and batch, AdamW, the same OpenBLAS
# build and kernels (the Python side gets LD_LIBRARY_PATH = the folder of the OpenBLAS dtrainer
# loads, and OPENBLAS_CORETYPE = the kernels it runs; see cmake/ProgramRuntime.cmake and
# include/dtrainer/core/blas_kernels.h), `--threads` compute threads.
#
# Models (the 8.17 M and the 424 M UNets of issue #26):
#   small      sdxl-c128 with model_channels 32, transformer_depth 0,1,1 (8,170,052 params), batch 4
#   sdxl-c128  the preset (423,971,332 params), batch 2
# Both at 256 px (latents 4 x 32 x 32), 77 x 1024 text states.
#
# DIFFUSERS_SRC: the src folder of a diffusers checkout (measured with v0.30.3; see the peer script's
# docstring for the Debian packages it needs). Environment: BUILD_DIR (default build), PYTHON
# (default /usr/bin/python3: Debian's, which has python3-torch), STEPS, WARMUP, REPEATS (per run;
# defaults 3, 1, 3). Raw JSON lines of every run go to $OUT (default $BUILD_DIR/side_by_side.jsonl).
# Takes ~25 minutes with the defaults on a 2-core machine (sdxl-c128 dominates; STEPS=2 REPEATS=2
# --pairs 1 for it: ~6 minutes). Where a ratio comes from, op by op: `dtbench train --profile FILE`
# and the peer script's `--profile FILE` write one step's profile each; bench/peer/op_table.py
# compares them (bench/RESULTS.md, "CPU training step").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build}
python=${PYTHON:-/usr/bin/python3}
steps=${STEPS:-3}
warmup=${WARMUP:-1}
repeats=${REPEATS:-3}
out=${OUT:-$build/side_by_side.jsonl}
threads_list="1 2"
pairs=2
models="small,sdxl-c128"
while (( $# )); do
  case "$1" in
    --threads) threads_list=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "side_by_side.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "${DIFFUSERS_SRC:-}" || ! -d "$DIFFUSERS_SRC/diffusers" ]]; then
  echo "side_by_side.sh: set DIFFUSERS_SRC to the src folder of a diffusers checkout (see --help)" >&2
  exit 2
fi
for tool in dtbench dtmodel; do
  [[ -x "$build/tools/$tool" ]] || { echo "side_by_side.sh: $build/tools/$tool not built (scripts/bootstrap.sh)" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$out"

model_args() {  # NAME -> "preset|batch|overrides (space separated key=value)"
  case "$1" in
    small) echo "sdxl-c128|4|model_channels=32 transformer_depth=0,1,1" ;;
    sdxl-c128) echo "sdxl-c128|2|" ;;
    *) echo "side_by_side.sh: unknown model '$1' (small, sdxl-c128)" >&2; exit 2 ;;
  esac
}

# The kernels dtrainer runs with (it re-selects them when OpenBLAS falls back to generic ones).
# The BLAS dtrainer runs with: its build (dtrainer's programs load OpenBLAS on OpenMP through their
# RPATH) and its kernels (re-selected when OpenBLAS falls back to generic ones). Python gets both.
probe=$("$build/tools/dtbench" train --model unet-tiny --batch 1 --steps 1 --warmup 0 --repeats 1 --threads 1 \
          --dtype fp32 --json 2>/dev/null)
core=$("$python" -c 'import json,sys; print(json.loads(sys.argv[1])["blas_core"])' "$probe")
blas_dir=$("$python" -c 'import json,os,sys; p=json.loads(sys.argv[1])["blas_library"]; print(os.path.dirname(p) if p else "")' "$probe")
echo "# OpenBLAS on both sides: ${core:-(not OpenBLAS)} kernels from ${blas_dir:-(system)}" >&2

IFS=, read -ra model_list <<< "$models"
for name in "${model_list[@]}"; do
  IFS='|' read -r preset batch overrides <<< "$(model_args "$name")"
  describe_args=() bench_args=()
  for kv in $overrides; do
    key=${kv%%=*} value=${kv#*=}
    describe_args+=("--${key//_/-}" "$value")
    bench_args+=(--model-set "$kv")
  done
  "$build/tools/dtmodel" describe "$preset" "${describe_args[@]}" --json > "$tmp/$name.json"
  for threads in $threads_list; do
    for ((p = 1; p <= pairs; ++p)); do
      echo "# $name, $threads thread(s), pair $p/$pairs: dtrainer" >&2
      OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "$build/tools/dtbench" train --model "$preset" \
          "${bench_args[@]}" --batch "$batch" --dtype fp32 --threads "$threads" --steps "$steps" \
          --warmup "$warmup" --repeats "$repeats" --json |
        "$python" -c 'import json,sys; r=json.loads(sys.stdin.readline()); r["side"]="dtrainer"; r["name"]=sys.argv[1]; print(json.dumps(r))' "$name" >> "$out"
      echo "# $name, $threads thread(s), pair $p/$pairs: python" >&2
      env ${core:+OPENBLAS_CORETYPE=$core} ${blas_dir:+LD_LIBRARY_PATH=$blas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} "$python" "$here/diffusers_unet_step.py" --describe "$tmp/$name.json" \
          --batch "$batch" --threads "$threads" --steps "$steps" --warmup "$warmup" --repeats "$repeats" |
        "$python" -c 'import json,sys; r=json.loads(sys.stdin.readline()); r["side"]="python"; r["name"]=sys.argv[1]; print(json.dumps(r))' "$name" >> "$out"
    done
  done
done

"$python" - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| model | params | batch | threads | dtrainer s/step | PyTorch-Python s/step | ratio | faults/step (dtrainer / Python) |")
print("|---|---|---|---|---|---|---|---|")
keys = []
for r in rows:
    k = (r["name"], r["threads"])
    if k not in keys:
        keys.append(k)
for name, threads in keys:
    side = lambda s: [r for r in rows if r["name"] == name and r["threads"] == threads and r["side"] == s]
    d, p = side("dtrainer"), side("python")
    ds, ps = [r["step_seconds"] for r in d], [r["step_seconds"] for r in p]
    span = lambda v: f"{min(v):.3f}" if len(v) == 1 else f"{min(v):.3f}–{max(v):.3f}"
    ratio = statistics.median(ds) / statistics.median(ps)
    faults = f"{statistics.median(r['minor_faults_per_step'] for r in d):.0f} / " \
             f"{statistics.median(r['minor_faults_per_step'] for r in p):.0f}"
    print(f"| {name} | {d[0]['params']:,} | {d[0]['micro_batch']} | {threads} | {span(ds)} | {span(ps)} | "
          f"**{ratio:.2f}** | {faults} |")
EOF
