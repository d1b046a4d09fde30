#pragma once
// Tables of named columns from CSV files or dtrainer run directories. Numeric access checks every
// cell and names the row and column of a bad one.

#include <string>
#include <vector>

#include "dtrainer/core/name_table.h"

namespace dtrainer::analysis {

struct Table {
  std::string source;  // file or description, for errors
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;  // cells as text
  // Row numbers for errors: 1-based data rows (the header is row 0).
  std::vector<double> numeric(const std::string& column) const;  // finite numbers, else Error(source: row r, column c)
  bool has(const std::string& column) const;
  std::vector<std::string> notes;  // what a reader left out and why (the tool prints them)
};

// RFC-4180-style CSV: a header row, comma separated, double-quoted fields may hold commas.
Table read_csv(const std::string& path);

// dtrainer run directories: each holds metrics.jsonl (one JSON object per line). One row per run
// with columns run, N (params), C (compute_gflops), D (image_noun_pairs), step and `metric`,
// taken from the last record that has `metric` (or the best, or the one at `step`).
// kBest: the lowest value (losses); kHighest: the highest (scores); kAll: every record with the metric
// (each evaluation of a run is a point: the frontier is taken over all of them); records made before
// any training compute (step 0, compute_gflops 0) are left out with a note, as no log axis holds them.
enum class RunPick { kFinal, kBest, kHighest, kStep, kAll };
const NameTable<RunPick>& name_table(RunPick);  // final | best | highest | step | all
Table read_runs(const std::vector<std::string>& dirs, const std::string& metric, RunPick pick, long long step = -1);

}  // namespace dtrainer::analysis
