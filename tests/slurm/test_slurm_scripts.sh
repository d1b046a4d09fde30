#!/usr/bin/env bash
# Opt-in (DTRAINER_SLURM_TESTS=1): submits slurm/train_4node.sh and slurm/sweep.sh to a real
# Slurm cluster — ../shared/tools/local-slurm/start-local-slurm.sh starts one on this machine
# (started here if sinfo finds none) — with CPU ranks and a tiny model, and checks the run
# directories: a 4-node srun --mpi=pmix run, a --signal=TERM preemption that checkpoints, requeues
# and resumes to the end, and a 2-task array sweep launched with mpirun.
# Then dtstudy --launcher slurm: an array job of a study's runs and a report job after it.
# Usage: test_slurm_scripts.sh PROJECT_ROOT DTRAINER_BIN [DTSTUDY_BIN]     (exit 77 = skipped)
set -uo pipefail
[ "${DTRAINER_SLURM_TESTS:-0}" = 1 ] || { echo "skipped: set DTRAINER_SLURM_TESTS=1 (needs root and a local Slurm cluster)"; exit 77; }
root=$1 bin=$2 study_bin=${3:-}
fail=0
ok() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

if ! sinfo -h >/dev/null 2>&1; then
  starter=$root/../shared/tools/local-slurm/start-local-slurm.sh
  [ -x "$starter" ] || [ -f "$starter" ] || { echo "no Slurm cluster and no $starter"; exit 1; }
  bash "$starter" || exit 1
fi
[ -f /run/slurm/local-slurm.env ] && source /run/slurm/local-slurm.env
export DTRAINER_BIN=$bin

work=$(mktemp -d /tmp/dtrainer-slurm-XXXXXX)
trap 'rm -rf "$work"' EXIT
tiny() {  # tiny NAME STEPS CHANNELS
  cat > "$work/$1.toml" <<TOML
name = "$1"
data = ["synthetic:shapes"]
synthetic_images = 256
model_set = ["model_channels=$3", "channel_mult=1,2", "transformer_depth=0,1", "num_res_blocks=1", "head_dim=8", "norm_groups=4"]
steps = $2
global_batch = 8
warmup_steps = 2
log_every = 1
eval_every = 0
ckpt_every = 20
sample_count = 2
sample_steps = 3
peak_tflops = 1
TOML
}
last_step() { tail -n 50 "$1/metrics.jsonl" 2>/dev/null | grep -v '"eval"' | tail -n 1 | sed 's/.*"step":\([0-9]*\).*/\1/'; }

cd "$root"
# 1. 4 nodes x 1 rank through srun --mpi=pmix.
tiny t1 20 16
DTRAINER_RUN_DIR=$work/run1 sbatch --wait -N 4 --ntasks-per-node=1 -o "$work/t1-%j.out" slurm/train_4node.sh "$work/t1.toml" >/dev/null
out=$(cat "$work"/t1-*.out)
echo "$out" | tail -n 5
[ -f "$work/run1/DONE" ] && [ "$(last_step "$work/run1")" = 20 ] && ok "train_4node.sh: 20 steps on 4 nodes" || bad "train_4node.sh run (see above)"
echo "$out" | grep -q "srun --mpi=pmix" && ok "launched with srun --mpi=pmix" || bad "not launched with srun --mpi=pmix"
echo "$out" | grep -q "no GPUs in this allocation" && ok "GPU-less allocation detected" || bad "GPU-less allocation not detected"
echo "$out" | grep -q "on 4 ranks" && ok "4 ranks" || bad "expected 4 ranks"

# 2. Preemption: --signal=TERM to the job's tasks mid-run -> checkpoint, exit 0, requeue, resume, finish.
tiny t2 120 16
job=$(DTRAINER_RUN_DIR=$work/run2 sbatch --parsable -N 2 --ntasks-per-node=1 -o "$work/t2-%j.out" slurm/train_4node.sh "$work/t2.toml")
for _ in $(seq 600); do [ "$(last_step "$work/run2")" -ge 5 ] 2>/dev/null && break; sleep 0.5; done
scancel --signal=TERM "$job"
restarts=0
for _ in $(seq 900); do
  r=$(scontrol show job "$job" -o 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
  [ -n "$r" ] && restarts=$r
  [ -f "$work/run2/DONE" ] && ! squeue -h -j "$job" 2>/dev/null | grep -q . && break
  sleep 1
done
out=$(cat "$work"/t2-*.out)
echo "$out" | grep -E "preempted|requeue|resumed|complete" | head -n 6
echo "$out" | grep -q "preempted" && ok "SIGTERM: dtrainer checkpointed and stopped" || bad "no preemption message"
# Slurm's own record, not a log line (scontrol requeue may end the batch script before it logs).
[ "$restarts" -ge 1 ] && ok "job requeued (Slurm: Restarts=$restarts)" || bad "job not requeued (Slurm: Restarts=$restarts)"
echo "$out" | grep -q "resumed from" && ok "requeued job resumed from the checkpoint" || bad "no resume after requeue"
[ -f "$work/run2/DONE" ] && [ "$(last_step "$work/run2")" = 120 ] && ok "preempted run finished all 120 steps" || bad "preempted run did not finish"

# 2b. A run that fails (here: a bad key in its job file) is not requeued, even after an earlier
#     preemption of the same run directory left its marker.
tiny t3 20 16
echo "learning_rate = 1e-4" >> "$work/t3.toml"
mkdir -p "$work/run3" && echo "step 5 signal 15" > "$work/run3/PREEMPTED"
job=$(DTRAINER_RUN_DIR=$work/run3 sbatch --parsable -N 1 --ntasks-per-node=1 -o "$work/t3-%j.out" slurm/train_4node.sh "$work/t3.toml")
for _ in $(seq 300); do squeue -h -j "$job" 2>/dev/null | grep -q . || break; sleep 1; done
r=$(scontrol show job "$job" -o 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
state=$(scontrol show job "$job" -o 2>/dev/null | grep -o 'JobState=[A-Z]*' | cut -d= -f2)
grep -h "dtrainer failed" "$work"/t3-*.out | head -n 1
[ "${r:-0}" = 0 ] && [ "$state" = FAILED ] && ok "a failing run: job $state, not requeued" || bad "a failing run: job ${state:-?}, Restarts=${r:-?}"

# 3. Array sweep over two configs, mpirun inside sbatch.
tiny s_a 10 16
tiny s_b 10 24
DTRAINER_LAUNCHER=mpirun sbatch --wait --array=0-1 -N 2 --ntasks-per-node=1 -o "$work/sw-%A_%a.out" slurm/sweep.sh "$work/s_a.toml" "$work/s_b.toml" >/dev/null
n=$(ls -d runs/s_a-* runs/s_b-* 2>/dev/null | while read -r d; do [ -f "$d/DONE" ] && echo "$d"; done | wc -l)
grep -h "mpirun" "$work"/sw-*.out | head -n 2
[ "$n" = 2 ] && ok "sweep.sh: both array tasks trained" || bad "sweep.sh: $n of 2 array tasks finished"
rm -rf runs/s_a-* runs/s_b-*

# 4. dtstudy --launcher slurm: one array job for the study's three runs (each on 2 nodes x 1 rank,
#    mpirun inside), a report job with --dependency=afterok on it, and the report it writes.
if [ -n "$study_bin" ]; then
  { printf 'name = "slurm-study"\ndir = "%s"\nranks = 2\nranks_per_node = 1\n' "$work/study"
    cat "$root/tests/study/tiny_study_body.toml"; } > "$work/study.toml"
  out=$(DTRAINER_LAUNCHER=mpirun "$study_bin" run "$work/study.toml" --launcher slurm --dtrainer "$bin" --no-measure 2>&1)
  echo "$out" | tail -n 4
  report_job=$(sed -n 's/.*"report_job": "\([0-9]*\)".*/\1/p' "$work/study/slurm.json")
  array_job=$(sed -n 's/.*"array_job": "\([0-9]*\)".*/\1/p' "$work/study/slurm.json")
  [ -n "$array_job" ] && [ -n "$report_job" ] && ok "dtstudy submitted array job $array_job and report job $report_job" || bad "dtstudy did not submit (see above)"
  dep=$(scontrol show job "$report_job" -o 2>/dev/null | grep -o 'Dependency=[^ ]*')
  echo "$dep" | grep -q "afterok:$array_job" && ok "report job depends on the array: $dep" || bad "report job dependency: '${dep:-gone}' (a fast array may have finished)"
  for _ in $(seq 900); do [ -f "$work/study/report.md" ] && ! squeue -h -j "$report_job" 2>/dev/null | grep -q . && break; sleep 1; done
  [ -f "$work/study/report.md" ] && grep -q "eval_loss against C" "$work/study/report.md" && ok "the report job wrote report.md" || bad "no report.md (logs: $work/study/logs)"
  status=$("$study_bin" status "$work/study")
  echo "$status" | tail -n 1
  echo "$status" | grep -q "3 of 3 runs complete" && ok "dtstudy status: every run complete" || bad "dtstudy status: $status"
fi
exit $fail
