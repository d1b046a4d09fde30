#!/usr/bin/env bash
# scripts/gpu/max_batch.sh against a stand-in dtbench whose memory limit is known: batches up to
# FIT train, larger ones fail with the allocator's "out of memory" message. The search must report
# exactly FIT from a start below and above it, pass the cap and the flags through, and stop (exit 3,
# naming the batch) on a failure that is not about memory.
#   test_gpu_max_batch.sh PROJECT_SOURCE_DIR
set -uo pipefail
script=$1/scripts/gpu/max_batch.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*" >&2; fails=$((fails + 1)); }

cat > "$tmp/dtbench" <<'FAKE'
#!/usr/bin/env bash
echo "$*" >> "$ARGS_LOG"
b=$(sed -E 's/.*--batch ([0-9]+).*/\1/' <<< "$*")
if [ "$b" = "${BROKEN_AT:-}" ]; then echo "error: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED" >&2; exit 1; fi
if [ "$b" -gt "$FIT" ]; then echo "error: CUDA out of memory. Tried to allocate 2.00 GiB" >&2; exit 1; fi
echo "{\"model\": \"sdxl\", \"micro_batch\": $b, \"peak_memory_bytes\": $((b * 1073741824))}"
FAKE
chmod +x "$tmp/dtbench"
export DTBENCH=$tmp/dtbench ARGS_LOG=$tmp/args LAUNCH=  # the stand-in runs without mpirun

# (start, fit) pairs: start below, above, equal to the limit; a limit of 1; an odd limit.
for pair in 8:37 64:37 37:37 4:1 1:100; do
  start=${pair%%:*} fit=${pair#*:}
  rm -rf "$tmp/out" "$ARGS_LOG"
  out=$(FIT=$fit "$script" "$tmp/out" sdxl "$start" --sharding zero3 --activation-checkpointing)
  rc=$?
  [ $rc -eq 0 ] || fail "start $start, fit $fit: exit $rc"
  grep -q "micro-batch $fit per GPU within 80 GiB, not at $((fit + 1))" <<< "$out" || fail "start $start, fit $fit: reported '$out'"
  grep -q "peak allocated $fit.0 GiB" <<< "$out" || fail "start $start, fit $fit: peak not the fitting probe's: '$out'"
  # Every probe carries the cap and the flags given.
  probes=$(wc -l < "$ARGS_LOG")
  [ "$(grep -c -- '--memory-limit-gib 80 .*--sharding zero3 --activation-checkpointing' "$ARGS_LOG")" -eq "$probes" ] ||
    fail "start $start: a probe lacks the cap or the flags: $(cat "$ARGS_LOG")"
  # The record holds one line per probe, fitting ones with dtbench's result.
  [ "$(wc -l < "$tmp/out/max_batch.jsonl")" -eq "$probes" ] || fail "start $start: jsonl lines != probes"
done

# CAP_GIB is what the probes are capped at.
rm -rf "$tmp/out" "$ARGS_LOG"
FIT=5 CAP_GIB=40 "$script" "$tmp/out" sdxl 4 > /dev/null || fail "CAP_GIB run failed"
grep -q -- '--memory-limit-gib 40 ' "$ARGS_LOG" || fail "CAP_GIB=40 not passed: $(head -1 "$ARGS_LOG")"

# A failure that is not out-of-memory stops the search, naming the batch.
rm -rf "$tmp/out"
err=$(FIT=37 BROKEN_AT=16 "$script" "$tmp/out" sdxl 8 2>&1 >/dev/null)
rc=$?
[ $rc -eq 3 ] || fail "non-memory failure: exit $rc, wanted 3"
grep -q "batch 16 failed for a reason other than memory" <<< "$err" || fail "non-memory failure not named: '$err'"

# Nothing fits: exit 1.
rm -rf "$tmp/out"
FIT=0 "$script" "$tmp/out" sdxl 4 > /dev/null 2>&1
rc=$?
[ $rc -eq 1 ] || fail "batch 1 out of memory: exit $rc, wanted 1"

# Usage: exit 2.
"$script" "$tmp/out" > /dev/null 2>&1
rc=$?
[ $rc -eq 2 ] || fail "missing arguments: exit $rc, wanted 2"

[ $fails -eq 0 ] && echo "max_batch.sh: all checks passed"
exit $((fails > 0))
