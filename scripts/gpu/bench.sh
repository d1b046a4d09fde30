#!/usr/bin/env bash
# Runs `dtbench train` for each case and appends its JSON line to OUT_DIR/train.jsonl, its output to
# OUT_DIR/train.log. A case is PRESET:BATCH[:FLAG,FLAG...] (flags without their leading dashes,
# e.g. sdxl:32:sharding=zero3,activation-checkpointing,channels-last). A case that fails (out of
# memory, say) is logged as such and the rest still run; the exit status is that of the last failure.
#   source build-gpu/env.sh && scripts/gpu/bench.sh OUT_DIR CASE...
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
shift
dtbench=${DTBENCH:-$root/build-gpu/tools/dtbench}
mkdir -p "$out"
status=0
for case in "$@"; do
  IFS=: read -r model batch flags <<< "$case"
  args=(train --model "$model" --batch "$batch" --json ${DT_BENCH_ARGS:-})
  if [ -n "${flags:-}" ]; then
    IFS=, read -ra fl <<< "$flags"
    for f in "${fl[@]}"; do
      if [[ $f == *=* ]]; then args+=("--${f%%=*}" "${f#*=}"); else args+=("--$f"); fi
    done
  fi
  echo "== $case: dtbench ${args[*]}" | tee -a "$out/train.log"
  start=$(date +%s)
  if line=$("$dtbench" "${args[@]}" 2>> "$out/train.log"); then
    echo "$line" | tee -a "$out/train.log" >> "$out/train.jsonl"
  else
    rc=$?
    status=$rc
    echo "{\"case\": \"$case\", \"failed\": $rc}" | tee -a "$out/train.log" >> "$out/train.jsonl"
  fi
  echo "   ($(( $(date +%s) - start )) s)" >> "$out/train.log"
done
exit $status
