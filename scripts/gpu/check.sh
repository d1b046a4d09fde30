#!/usr/bin/env bash
# The checks a GPU session runs in one device call, after scripts/gpu/build.sh:
#   1. the whole test suite against the GPU build (ctest.log);
#   2. the CUDA-path test again with CUDA_LAUNCH_BLOCKING=1 (cuda_path_blocking.log): a difference
#      between GPU and CPU sharding that disappears when every launch waits is a stream race;
#   3. a dtrainer run on the GPU (dtrainer.log, dtrainer-run/metrics.jsonl): the quickstart model
#      for `steps` steps on one rank, bf16, with a checkpoint.
#   source build-gpu/env.sh && scripts/gpu/check.sh OUT_DIR [ctest seconds, default 300]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
budget=${2:-300}
build=${DT_GPU_BUILD:-$root/build-gpu}
mkdir -p "$out"
cd "$root"
timeout "$budget" ctest --test-dir "$build" --output-on-failure -j 8 > "$out/ctest.log" 2>&1
echo "check.sh: ctest exit $? ($(grep -E 'tests passed' "$out/ctest.log"))"
grep -E '\*\*\*|Failed|Timeout' "$out/ctest.log" | head -20
CUDA_LAUNCH_BLOCKING=1 timeout 120 mpirun --allow-run-as-root -n 1 "$build/tests/parallel/test_parallel_cuda_path" > "$out/cuda_path_blocking.log" 2>&1
echo "check.sh: CUDA path test with CUDA_LAUNCH_BLOCKING=1: exit $?"
grep -E 'rel diff|passed|failed' "$out/cuda_path_blocking.log" | head -12
rm -rf "$out/dtrainer-run"
timeout 240 mpirun --allow-run-as-root -n 1 "$build/tools/dtrainer" --device cuda --compute-dtype bf16 --steps 200 \
  --log-every 50 --eval-every 100 --ckpt-every 100 --run-dir "$out/dtrainer-run" > "$out/dtrainer.log" 2>&1
echo "check.sh: dtrainer on the GPU: exit $?"
grep -E 'device|step [0-9]+/|error' "$out/dtrainer.log" | tail -8
