#pragma once
// Running a planned study (`dtstudy run`). The study directory records what ran and how:
//
//   STUDY_DIR/study.toml         the study file as given        plan.txt, plan.json   the plan
//   STUDY_DIR/configs/RUN.toml   each run's exact job file      provenance.json       commit, host, user, when
//   STUDY_DIR/commands.sh        every command launched, appended, with its date
//   STUDY_DIR/launches.jsonl     one record per launch: run, command, start, end, exit, state, step
//   STUDY_DIR/runs/RUN/          each run's dtrainer run directory (metrics.jsonl, ckpt/, alignment/)
//   STUDY_DIR/logs/RUN.log       each run's output
//
// Local: one run after another with mpirun; a complete run (DONE at its steps) is never started
// again, a partial one resumes from its newest checkpoint (dtrainer --resume auto). A signal to
// dtstudy (Ctrl-C, SIGTERM) is passed to the running trainer, which checkpoints at its next step;
// rerunning continues. A failed run is recorded and the others still run; the exit status says so.
// Slurm: one array job over the runs not yet complete (slurm/sweep.sh) and a report job that
// depends on it (--dependency=afterok).

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "dtrainer/study/study_plan.h"

namespace dtrainer::study {

// Writes the records above (configs, plan, study file, provenance). A run that has started
// (its run directory exists) with a different job file is an Error naming the run and the first
// line that differs: a study's runs change only by a new study directory.
void prepare_study_directory(const StudyPlan& plan);

enum class RunStatus { kNotStarted, kPartial, kComplete, kPreempted };
// What a run's directory says: complete (DONE at >= `steps`), preempted (PREEMPTED), partial
// (a checkpoint or records, no marker), not started.
RunStatus run_status(const std::filesystem::path& run_dir, int64_t steps);

struct LocalLaunch {
  std::filesystem::path dtrainer;  // the trainer binary
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirun_args;  // extra arguments, before the program
};

// Runs the study's runs in plan order; progress lines go to `out`. Returns 0 when every run is
// complete, 1 when some failed (named, with their logs), 130/143 when interrupted by a signal.
int run_study_locally(const StudyPlan& plan, const LocalLaunch& launch, std::ostream& out);

struct SlurmLaunch {
  std::filesystem::path dtrainer, dtstudy;  // binaries the jobs run
  std::filesystem::path scripts;            // the directory holding sweep.sh and launch.sh
  std::string sbatch = "sbatch";
  std::vector<std::string> sbatch_args;  // extra arguments for both jobs (partition, account, time)
};

// Submits the array job and the report job; records their ids in STUDY_DIR/slurm.json and the
// commands in commands.sh. Returns 0, or throws Error with sbatch's message.
int submit_study_to_slurm(const StudyPlan& plan, const SlurmLaunch& launch, std::ostream& out);

// The commit of the working directory's repository (`git rev-parse HEAD`, "+dirty" with local
// changes), or "unknown".
std::string source_commit();

}  // namespace dtrainer::study
