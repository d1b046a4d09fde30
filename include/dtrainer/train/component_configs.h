#pragma once
// Each component of a run built from the run's configuration (TrainConfig): the training stack's
// (model, sharding, optimizer), the loader's, the objective, the learning-rate schedule. The
// trainer assembles these; a new option of a component is read here, in one place.

#include <memory>

#include "dtrainer/data/loader.h"
#include "dtrainer/diffusion/objective.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/lr_schedule.h"
#include "dtrainer/train/sampling.h"
#include "dtrainer/train/startup_plan.h"
#include "dtrainer/train/train_config.h"
#include "dtrainer/train/training_stack.h"

namespace dtrainer::train {

// `resuming`: the checkpoint's weights replace the model's, so init_weights is not read.
TrainingStackConfig training_stack_config(const TrainConfig& c, const StartupPlan& plan, bool resuming);
// How prompts are padded (the loader's, the alignment evaluation's and dteval's: one setting).
diffusion::TextPaddingConfig text_padding_config(const TrainConfig& c);
data::LoaderConfig training_loader_config(const TrainConfig& c, const DataPlan& data, int rank, int world);
// The objective at latent side `latent_size` (a stage's Eq. 3 rescaling depends on it: train/stage_transfer.h).
std::unique_ptr<diffusion::Objective> make_objective(const TrainConfig& c, int64_t latent_size);
LrSchedule make_lr_schedule(const TrainConfig& c);
// How the run samples (the trainer's grids and alignment scores, dteval): steps, seed, the guidance
// scale (Eq. 4 for a stage with guidance_transfer), and for a model with [S2] controls the control
// guidance beta and the controls of an uncropped image of the data's size. Model and device are the caller's.
SamplerSetup sampler_setup(const TrainConfig& c, const DataPlan& data);

}  // namespace dtrainer::train
