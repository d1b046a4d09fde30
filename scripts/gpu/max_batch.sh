#!/usr/bin/env bash
# The largest micro-batch of a preset that trains within a GPU memory cap: `dtbench train` probes
# (one step after one warm-up step) under --memory-limit-gib, doubling the batch from START until
# a probe runs out of memory, then bisecting. A probe that fails for any other reason stops the
# search (its log is printed): only "out of memory" counts as "does not fit".
# Each probe goes to OUT_DIR/max_batch.jsonl, its output to OUT_DIR/max_batch.log.
#   source build-gpu/env.sh && scripts/gpu/max_batch.sh OUT_DIR MODEL START [dtbench train flags...]
#   e.g. scripts/gpu/max_batch.sh $OUT sdxl 8 --sharding zero3 --activation-checkpointing
# Environment: CAP_GIB (default 80: an 80 GB GPU, also on an H200), RANKS (default 1; under
# zero3 the parameter and optimizer state per GPU shrink with the ranks), DTBENCH, LAUNCH (the
# launcher before dtbench, default "mpirun --allow-run-as-root -n RANKS"; empty: none).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -lt 3 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
out=$1 model=$2 start=$3
shift 3
cap=${CAP_GIB:-80}
ranks=${RANKS:-1}
dtbench=${DTBENCH:-$root/build-gpu/tools/dtbench}
read -ra launch <<< "${LAUNCH-mpirun --allow-run-as-root -n $ranks}"
mkdir -p "$out"

# probe B: 0 if batch B fits, 1 if it ran out of memory; exits the script on any other failure.
probe() {
  local b=$1 log
  log=$(mktemp)
  echo "== $model batch $b (cap $cap GiB, $ranks rank(s)): ${*:2}" >> "$out/max_batch.log"
  if line=$("${launch[@]}" "$dtbench" train --model "$model" --batch "$b" --steps 1 --warmup 1 \
      --repeats 1 --peak-tflops 1 --memory-limit-gib "$cap" --json "${@:2}" 2> "$log"); then
    cat "$log" >> "$out/max_batch.log"
    echo "$line" >> "$out/max_batch.log"
    echo "{\"batch\": $b, \"fits\": true, \"result\": $line}" >> "$out/max_batch.jsonl"
    fitting=$line  # (each fit raises lo to b: the last one is the answer's)
    rm -f "$log"
    return 0
  fi
  cat "$log" >> "$out/max_batch.log"
  if grep -qi "out of memory" "$log"; then
    echo "{\"batch\": $b, \"fits\": false}" >> "$out/max_batch.jsonl"
    rm -f "$log"
    return 1
  fi
  echo "max_batch.sh: the probe at batch $b failed for a reason other than memory:" >&2
  tail -20 "$log" >&2
  rm -f "$log"
  exit 3
}

# Doubling: afterwards hi does not fit, lo (0 if START did not fit) does.
lo=0 hi=$start fitting=
while probe "$hi" "$@"; do
  lo=$hi
  hi=$((hi * 2))
done
while [ $((hi - lo)) -gt 1 ]; do
  mid=$(((lo + hi) / 2))
  if probe "$mid" "$@"; then lo=$mid; else hi=$mid; fi
done
if [ "$lo" -eq 0 ]; then
  echo "max_batch.sh: $model does not train at batch 1 within $cap GiB ($*)"
  exit 1
fi
peak=$(sed -E 's/.*"peak_memory_bytes": *([0-9]+).*/\1/' <<< "$fitting")
echo "max_batch.sh: $model trains at micro-batch $lo per GPU within $cap GiB, not at $hi ($ranks rank(s)${*:+, $*});" \
  "peak allocated $(awk -v b="$peak" 'BEGIN { printf "%.1f GiB", b / 2^30 }')"
