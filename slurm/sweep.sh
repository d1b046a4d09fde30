#!/usr/bin/env bash
# A scaling study as an array job: task i trains the i-th configuration given.
#   sbatch --array=0-15 slurm/sweep.sh jobs/s1-*.toml
# Each task gets its own run directory: the config's run_dir when it sets one (dtstudy's job files
# do), else runs/<config>-<array job id>; requeued tasks resume it.
# fitlaws then reads every runs/*/metrics.jsonl of the sweep (docs/FITLAWS.md).
#SBATCH --job-name=dtrainer-sweep
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --requeue
#SBATCH --signal=USR1@120
#SBATCH --open-mode=append
#SBATCH --output=dtrainer-sweep-%A_%a.out
set -euo pipefail
root=${DTRAINER_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$root"
source "$root/slurm/launch.sh"
configs=("$@")
task=${SLURM_ARRAY_TASK_ID:-0}
[ "${#configs[@]}" -gt 0 ] || { dt_log "usage: sbatch --array=0-N slurm/sweep.sh CONFIG..."; exit 2; }
[ "$task" -lt "${#configs[@]}" ] || { dt_log "array task $task but only ${#configs[@]} configs"; exit 2; }
config=${configs[$task]}
configured=$(sed -n 's/^run_dir *= *"\(.*\)" *$/\1/p' "$config" | tail -n 1)
run_dir=${DTRAINER_RUN_DIR:-${configured:-runs/$(basename "$config" .toml)-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-local}}}}
dt_launch "$config" "$run_dir"
