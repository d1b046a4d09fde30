#!/usr/bin/env bash
# Train one configuration on 4 nodes x 4 ranks (one per GPU on a GPU cluster).
#   sbatch slurm/train_4node.sh jobs/s1-sdxl.toml [dtrainer options...]
#   sbatch --gpus-per-node=4 slurm/train_4node.sh jobs/X.toml          (request GPUs where GRES exist)
# The run directory is runs/<config>-<job id> (DTRAINER_RUN_DIR overrides); a requeued job keeps
# its id, so it resumes its own newest complete checkpoint. Slurm's preemption SIGTERM, or the
# SIGUSR1 sent 120 s before the time limit, makes dtrainer checkpoint at the next step and exit 0;
# this script then requeues the job.
#SBATCH --job-name=dtrainer
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --requeue
#SBATCH --signal=USR1@120
#SBATCH --open-mode=append
#SBATCH --output=dtrainer-%j.out
set -euo pipefail
config=${1:-jobs/quickstart.toml}
shift $(( $# > 0 ? 1 : 0 ))
root=${DTRAINER_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$root"
source "$root/slurm/launch.sh"
run_dir=${DTRAINER_RUN_DIR:-runs/$(basename "$config" .toml)-${SLURM_JOB_ID:-local}}
dt_launch "$config" "$run_dir" "$@"
