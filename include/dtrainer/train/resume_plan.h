#pragma once
// Which checkpoint a run continues, decided before anything in the run directory changes:
// `resume = auto` takes the newest complete checkpoint of the run directory (if any), a path takes
// that one, `none` refuses a directory with checkpoints. The checkpoint's recorded configuration
// must agree with this run's on what a resume keeps (the model, its overrides, the global batch,
// the seed, the data mix and the synthetic data's settings); a difference is an error naming the
// field with both values. A newest checkpoint that cannot be read is an error that names the
// newest sound one before it (resume it with --resume PATH); nothing falls back silently.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace dtrainer::train {

struct TrainConfig;

struct ResumePlan {
  std::optional<std::string> checkpoint;  // none: a fresh start
  int64_t step = 0;
  nlohmann::json meta;  // the checkpoint's meta.json
};

ResumePlan plan_resume(const TrainConfig& config, const std::filesystem::path& run_dir);

// The newest complete checkpoint under `root` older than `before_step` whose every dataset reads
// back and matches its checksum; none when there is no such one. (Reads them: for error paths.)
std::optional<std::string> newest_sound_checkpoint(const std::filesystem::path& root, int64_t before_step);

// " The previous checkpoint <path> (step N) is sound: resume it with --resume <path>." or "".
std::string previous_checkpoint_hint(const std::filesystem::path& root, int64_t before_step);

}  // namespace dtrainer::train
