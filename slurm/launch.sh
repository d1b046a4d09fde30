# slurm/launch.sh — sourced by train_4node.sh and sweep.sh inside an allocation:
#   dt_launch CONFIG RUN_DIR [dtrainer args...]
# Starts one dtrainer rank per Slurm task (srun --mpi=pmix when the cluster has PMIx, else
# mpirun), adapts to the allocation (GPUs: NCCL knobs, one GPU per rank; no GPUs: CPU ranks
# with cpus-per-task threads each), resumes the run directory's newest complete checkpoint, and
# requeues the job when dtrainer stopped early for a preemption / time-limit signal.
#
# What happened is read from the run directory, not from the launcher's exit code (mpirun exits
# 1 after it was signalled even when every rank checkpointed and exited 0):
#   DONE       the run is complete                                   -> exit 0
#   PREEMPTED  dtrainer stopped after a signal, with a checkpoint    -> requeue (or say to resubmit), exit 0
#   neither    dtrainer failed                                        -> no requeue, the launcher's exit code (or 1)

dt_log() { echo "[dtrainer-slurm $(date +%H:%M:%S)] $*"; }

dt_launch() {
  local config=$1 run_dir=$2
  shift 2
  local root=${DTRAINER_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
  local bin=${DTRAINER_BIN:-$root/build/tools/dtrainer}
  [ -x "$bin" ] || { dt_log "error: $bin not found or not executable (build first: scripts/bootstrap.sh)"; return 2; }
  [ -f "$config" ] || { dt_log "error: config $config not found"; return 2; }
  mkdir -p "$run_dir"

  # GPUs or not: Slurm exports SLURM_GPUS_ON_NODE / CUDA_VISIBLE_DEVICES for GRES allocations.
  local gpus=${SLURM_GPUS_ON_NODE:-0}
  if [ "$gpus" -gt 0 ] 2>/dev/null && command -v nvidia-smi >/dev/null; then
    dt_log "GPU allocation: $gpus GPU(s) per node, NCCL communicators"
    export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
    export NCCL_ASYNC_ERROR_HANDLING=${NCCL_ASYNC_ERROR_HANDLING:-1}
    export NCCL_IB_DISABLE=${NCCL_IB_DISABLE:-0}
    [ -n "${NCCL_SOCKET_IFNAME:-}" ] && dt_log "NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME"
    export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-4}
  else
    local threads=${SLURM_CPUS_PER_TASK:-1}
    dt_log "no GPUs in this allocation: CPU ranks (MPI communicator), $threads thread(s) per rank"
    export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
    set -- --threads "$threads" "$@"
  fi

  # DTRAINER_LAUNCHER=srun|mpirun forces one; auto: srun with PMIx when the cluster has it.
  local launcher want=${DTRAINER_LAUNCHER:-auto}
  if [ "$want" = srun ] || { [ "$want" = auto ] && command -v srun >/dev/null && srun --mpi=list 2>&1 | grep -q pmix; }; then
    launcher=(srun --mpi=pmix --kill-on-bad-exit=1)
  else
    launcher=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
  fi
  dt_log "job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NUM_NODES:-?} node(s), ${SLURM_NTASKS:-?} rank(s): ${launcher[*]}"
  dt_log "run directory $run_dir"
  # mpirun's teardown after a signal gives the ranks odls_base_sigkill_timeout seconds between its
  # SIGTERM and its SIGKILL (Open MPI's default: 1, too short for a step and a checkpoint of a real model).
  export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-120}
  rm -f "$run_dir/PREEMPTED"  # (a marker of an earlier stop must not speak for this launch)
  local rc=0
  "${launcher[@]}" "$bin" --config "$config" --run-dir "$run_dir" --resume auto "$@" || rc=$?
  if [ -f "$run_dir/DONE" ]; then
    dt_log "run complete: $run_dir/metrics.jsonl"
    return 0
  fi
  if [ -f "$run_dir/PREEMPTED" ]; then
    # dtrainer stopped at a step boundary after SIGTERM / SIGUSR1 and checkpointed: continue later.
    # (Logged before requeueing: scontrol requeue may end this script at once.)
    if [ -n "${SLURM_JOB_ID:-}" ]; then
      dt_log "stopped early ($(cat "$run_dir/PREEMPTED")) after a checkpoint: requeueing job $SLURM_JOB_ID; it resumes from $run_dir/ckpt"
      scontrol requeue "$SLURM_JOB_ID" || dt_log "scontrol requeue failed: resubmit to resume from $run_dir/ckpt"
    else
      dt_log "stopped early ($(cat "$run_dir/PREEMPTED")) after a checkpoint; resubmit to resume from $run_dir/ckpt"
    fi
    return 0
  fi
  dt_log "dtrainer failed (launcher exit $rc; neither DONE nor PREEMPTED in $run_dir): not requeued; the run directory keeps its last complete checkpoint"
  [ "$rc" -ne 0 ] && return "$rc"
  return 1
}
