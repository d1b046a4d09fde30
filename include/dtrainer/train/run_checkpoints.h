#pragma once
// The run's checkpoints as the trainer keeps them: the resume (every rank loads; a failure names
// the previous sound checkpoint when --resume auto chose a broken newest one), and the saves
// (RUN/ckpt/step_N, rotated to keep_ckpts; a repeat of the newest step is skipped; the one a run
// resumed from is kept as it is; newer steps of an abandoned trajectory moved aside, each said).

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <mpi.h>
#include <nlohmann/json.hpp>

#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/models/parameter_layout.h"
#include "dtrainer/train/resume_plan.h"
#include "dtrainer/train/training_progress.h"

namespace dtrainer::train {

struct TrainConfig;

class RunCheckpoints {
 public:
  // `about`: what every checkpoint's meta.json records about the run besides its state (its latent
  // side and resolution scale: what a later stage reads, train/stage_transfer.h).
  RunCheckpoints(const TrainConfig& c, const std::filesystem::path& run_dir, const ResumePlan& resume,
                 std::string config_toml, nlohmann::json about = nlohmann::json::object());

  // Collective. Loads the resume checkpoint (none: returns false) into `params`; `progress` and
  // `loader_state` (meta.json's "loader") get what it saved.
  bool resume(parallel::ShardedParameters& params, const std::vector<models::UnitLayout>& layout, MPI_Comm comm,
              int rank, TrainingProgress& progress, nlohmann::json& loader_state);
  // Collective. Saves step `progress.step` (nothing when it is the newest this run holds).
  void save(const TrainingProgress& progress, const nlohmann::json& loader_state,
            const parallel::ShardedParameters& params, const std::vector<models::UnitLayout>& layout, MPI_Comm comm);
  int64_t newest() const { return newest_; }  // the newest step this run holds (-1: none)

 private:
  const TrainConfig& c_;
  std::filesystem::path dir_;
  ResumePlan resume_;
  std::string toml_;
  nlohmann::json about_;
  int64_t newest_ = -1;
};

}  // namespace dtrainer::train
