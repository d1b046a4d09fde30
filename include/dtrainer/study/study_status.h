#pragma once
// Where a study stands (`dtstudy status STUDY_DIR`), read from the study directory alone: per run
// its state (complete, partial, preempted, failed, not started), steps done of its steps, its last
// training loss, held-out loss and alignment, its newest checkpoint and its wall time so far.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace dtrainer::study {

// The last records of a run's metrics.jsonl.
struct RunProgress {
  int64_t step = 0;  // the last record's step (0: none)
  std::optional<double> loss, eval_loss, alignment;
  int64_t checkpoint_step = -1;  // newest complete checkpoint (-1: none)
};
RunProgress read_run_progress(const std::filesystem::path& run_dir);
// ", loss 0.0312, held-out 0.0250, alignment 0.412" (what there is).
std::string describe_progress(const RunProgress& p);

// The status table; Error when the directory holds no study (no plan.json).
std::string describe_study_status(const std::filesystem::path& study_dir);

}  // namespace dtrainer::study
