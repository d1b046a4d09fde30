#!/usr/bin/env bash
# Records the reference that tests/train/test_quickstart_reference.cpp holds the trainer to: the
# per-step training losses of the quickstart job (jobs/quickstart.toml, 2 ranks x 1 thread), its
# first 60 steps. Run it from the repository root with a built tree, before a change that must not
# alter training (a redesign), and commit the file it writes; never after such a change.
#   scripts/record_quickstart_reference.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=tests/train/quickstart_reference.json
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
args=(--config jobs/quickstart.toml --steps 60 --log-every 1 --eval-every 0 --align-every 0 --sample-count 0 --ckpt-every 0
      --threads 1 --run-dir "$dir/run")
mpirun -n 2 --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1 "$build/tools/dtrainer" "${args[@]}" > "$dir/log" 2>&1 ||
  { cat "$dir/log"; exit 1; }
python3 - "$dir/run/metrics.jsonl" "$out" "$(git rev-parse HEAD)" "${args[*]}" <<'PY'
import json, sys, platform
metrics, out, commit, args = sys.argv[1:]
losses = [json.loads(l)["loss"] for l in open(metrics) if "loss" in json.loads(l) and "eval" not in json.loads(l)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
json.dump({"what": "per-step training losses of the quickstart, 2 ranks x 1 thread", "commit": commit, "cpu": cpu,
           "args": args.replace(args.split("--run-dir")[1], " RUN").strip(), "losses": losses}, open(out, "w"), indent=1)
print(f"{out}: {len(losses)} losses from {commit[:10]} on {cpu}")
PY
