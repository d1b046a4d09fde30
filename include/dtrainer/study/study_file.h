#pragma once
// A scaling study as one TOML file (dtstudy, docs/STUDY.md): a base job, the axes that vary, the
// budget rule, the evaluation schedule and the fits. Read by toml++; an unknown key, a wrong type,
// an empty axis, a duplicate name is an Error naming FILE:LINE:COLUMN before anything starts.
//
//   name = "shapes-cpu"
//   job = "../jobs/quickstart.toml"     # the base job (relative to this file); none: dtrainer's defaults
//   ranks = 2
//   [set]                               # job keys for every run (dtrainer --help lists them)
//   model_set = ["norm_groups=4"]
//   [budget]                            # rule = "steps" (steps = N) or "iso-compute" (compute_gflops = C)
//   rule = "iso-compute"
//   compute_gflops = 8000
//   [eval]                              # schedule = "geometric" (points, ratio) or "every" (every = N)
//   schedule = "geometric"
//   [[axis]]                            # one family of runs: the base with `key` set to each value
//   name = "channels"
//   key = "model_set.model_channels"    # a job key, or model_set.FIELD (a preset field)
//   values = [16, 24, 32]               # or tables of several keys: [{model = "a", lr = 1e-3}, ...]
//   [[fit]]                             # y = a x^b on the Pareto frontier, per family and over all runs
//   y = "alignment"
//   x = "C"

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "dtrainer/analysis/power_fit.h"
#include "dtrainer/analysis/table.h"
#include "dtrainer/core/name_table.h"

namespace dtrainer::study {

// One job setting: a dtrainer key (or model_set.FIELD) and its value as TOML text ("16", "\"a\"",
// "[\"x\", \"y\"]"), with where the study file gave it.
struct Setting {
  std::string key, value, where;
};

struct AxisValue {
  std::string label;              // the run's name after the axis's: channels-16
  std::vector<Setting> settings;  // one for a scalar value, one per key for a table value
};

struct Axis {
  std::string name, where;
  std::vector<AxisValue> values;
};

enum class BudgetRule { kSteps, kIsoCompute };
const NameTable<BudgetRule>& name_table(BudgetRule);  // steps | iso-compute

struct Budget {
  BudgetRule rule = BudgetRule::kSteps;
  int64_t steps = 0;          // kSteps; 0: the base job's
  double compute_gflops = 0;  // kIsoCompute: C per run, GFLOPs ([S1]: 6 x linear/conv MACs x samples)
  int64_t round_to = 10;      // iso-compute steps are rounded to a multiple of this
};

enum class EvalSchedule { kBase, kEvery, kGeometric };
const NameTable<EvalSchedule>& name_table(EvalSchedule);  // base | every | geometric

struct EvalPlan {
  EvalSchedule schedule = EvalSchedule::kBase;  // kBase: the base job's eval_every / align_every
  int64_t every = 0;                            // kEvery
  int64_t points = 5;                           // kGeometric: evaluations at S, S/r, S/r^2, ... (points of them)
  double ratio = 2.0;
};

enum class FitAxis { kC, kN, kD };
const NameTable<FitAxis>& name_table(FitAxis);  // C | N | D

struct FitSpec {
  std::string name;             // file names: plots/<name>.svg; default <y>-vs-<x>
  std::string y = "alignment";  // a metrics.jsonl key: alignment, eval_loss, loss, ...
  FitAxis x = FitAxis::kC;
  analysis::Frontier frontier = analysis::Frontier::kMax;  // default: max for alignment, min otherwise
  analysis::RunPick pick = analysis::RunPick::kAll;        // which records of each run are points
  std::string where;
};

struct Study {
  std::filesystem::path file;  // the study file as given
  std::string text;            // its contents (recorded in the study directory)
  std::string name;
  std::filesystem::path job;  // the base job file, resolved against the study file's directory; empty: defaults
  std::filesystem::path dir;  // the study directory (default runs/study-<name>)
  int ranks = 2;
  int ranks_per_node = 0;     // 0: ranks (one node)
  int threads = 0;            // per rank; 0: the cores / ranks per node
  std::vector<Setting> base;  // the base job file's keys, in its order
  std::vector<Setting> set;
  Budget budget;
  EvalPlan eval;
  std::vector<Axis> axes;
  std::vector<FitSpec> fits;
  int64_t bootstrap = 200;  // resamples for the fits' intervals
  uint64_t seed = 1;
};

// Parses a study; `path` names it in errors and anchors the relative job path. Throws Error.
Study parse_study(const std::string& text, const std::filesystem::path& path);
Study read_study(const std::filesystem::path& path);

}  // namespace dtrainer::study
