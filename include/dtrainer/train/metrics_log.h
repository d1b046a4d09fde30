#pragma once
// The run's metrics: metrics.jsonl (one JSON object per record, core/metric_keys.h) and, beside
// it, TensorBoard event files under tb/ (train/tensorboard_events.h) with every numeric value of
// every record as a scalar at its step: nested objects are flattened with "/"
// ("alignment_by_category/color", "eval_loss_by_t/0.5"), two-number intervals become ".../lo" and
// ".../hi"; text, flags and other arrays are left out. Rank 0 writes; other ranks' calls do nothing.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dtrainer/train/run_directory.h"
#include "dtrainer/train/tensorboard_events.h"

namespace dtrainer::train {

class MetricsLog {
 public:
  MetricsLog(const RunDirectory& dir, int rank) : dir_(dir), writer_(rank == 0) {}

  // Before the first record of this run: metrics.jsonl keeps the records of steps <= `step` (the
  // resumed checkpoint's; none on a fresh start), and a new TensorBoard file begins.
  void start(int64_t step);
  void write(const nlohmann::json& record);

  // The scalars of a record, as written to TensorBoard (its step excluded).
  static std::vector<std::pair<std::string, float>> scalars(const nlohmann::json& record);

 private:
  const RunDirectory& dir_;
  bool writer_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

}  // namespace dtrainer::train
