#pragma once
// A trained model back from its checkpoint, for inference (dteval): the run's recorded
// configuration read back, the data it trained on planned as the trainer did (so synthetic data is
// found in the run directory), the backbone built for that data and loaded with the checkpoint's
// EMA or trained weights, and the objective (schedule, target) it was trained with.

#include <cstdint>
#include <memory>
#include <string>

#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/data/shard_format.h"
#include "dtrainer/diffusion/objective.h"
#include "dtrainer/diffusion/text_padding.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/train_config.h"

namespace dtrainer::train {

struct CheckpointModel {
  std::string checkpoint, run_dir;  // the checkpoint directory, the run directory holding it
  TrainConfig config;               // as the run recorded it
  int64_t step = 0, samples = 0;    // where training stood
  std::string weights;              // "params", "ema" or "phema_SIGMA": what was loaded
  DataPlan data;
  data::ShardHeader header;          // of the first training shard
  std::vector<int64_t> image_shape;  // [C, H, W]
  std::unique_ptr<models::Backbone> model;
  std::unique_ptr<diffusion::Objective> objective;
  diffusion::TextPaddingConfig padding;
};

// path: a checkpoint (RUN/ckpt/step_N) or a run directory (its newest complete checkpoint).
// Throws Error naming the path: no checkpoint, data not found, weights that do not fit.
CheckpointModel load_checkpoint_model(const std::string& path, ckpt::WeightsSource weights);

// The checkpoint directory `path` means (itself, or a run directory's newest complete one).
std::string resolve_checkpoint_path(const std::string& path);

}  // namespace dtrainer::train
