#pragma once
// The runs of a study, worked out before anything runs (`dtstudy plan`): each run's job file (the
// base job, the study's [set], the axis value, the budget's steps and the evaluation schedule),
// its model size N, its compute per sample and in all ([S1]'s C), its memory per rank (the dry
// run's estimate, checked against this node) and its time (from a measured step). Runs whose job
// files come out identical (the base value of one axis is on another) are one run, in every
// family it belongs to. A run that cannot start (a batch the ranks do not divide, memory, a bad
// key) is an Error naming it.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dtrainer/study/study_file.h"

namespace dtrainer::study {

struct PlannedRun {
  std::string name;                   // <axis>-<label>, the first family's
  std::vector<std::string> families;  // the axes it is a point of
  std::string job_toml;               // STUDY_DIR/configs/<name>.toml
  std::filesystem::path run_dir;      // STUDY_DIR/runs/<name>
  std::string model;                  // the backbone's one-line summary
  int64_t params = 0, steps = 0, global_batch = 0;
  double gflops_per_sample = 0;     // [S1]: 6 x linear/conv MACs, GFLOPs
  double compute_gflops = 0;        // C = steps x global_batch x gflops_per_sample
  double memory_per_rank = 0;       // bytes, the dry run's estimate
  std::vector<int64_t> eval_steps;  // evaluations besides step 0 and the last (geometric schedule)
  int64_t evaluations = 0;          // alignment evaluations the run makes (step 0 and the end included)
  double step_seconds = -1;         // measured (or -1: not measured)
  double est_seconds = -1;          // training + evaluations (-1: not measured)
};

struct StudyPlan {
  Study study;
  std::vector<PlannedRun> runs;
  double total_compute_gflops = 0, total_seconds = -1;
};

struct PlanOptions {
  bool measure = true;       // time one training step of each distinct model on this machine
  bool check_memory = true;  // the estimate against this node's available memory
  int cores = 0;             // 0: this machine's hardware threads (for threads per rank)
};

// Throws Error naming the study file's line or the run.
StudyPlan plan_study(const Study& study, const PlanOptions& options = {});

// Geometric schedule: round(S / ratio^k) for k = 1 .. points-1, at least 1, distinct, ascending.
std::vector<int64_t> geometric_eval_steps(int64_t steps, int64_t points, double ratio);
// Iso-compute: the multiple of round_to whose C is nearest `compute_gflops` (at least round_to).
int64_t iso_compute_steps(double compute_gflops, int64_t global_batch, double gflops_per_sample, int64_t round_to);

// The table `dtstudy plan` prints, with the totals.
std::string describe_study_plan(const StudyPlan& plan);
nlohmann::json study_plan_json(const StudyPlan& plan);

}  // namespace dtrainer::study
