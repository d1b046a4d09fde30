#pragma once
// The training loop (docs/TRAINING.md): builds the model, communicator, sharded parameters,
// loader and objective from the plan, resumes, and trains; metrics, held-out loss, samples,
// alignment, checkpoints and preemption at their steps. The `dtrainer` program
// (tools/dtrainer.cpp) parses and checks the configuration, plans, takes the run directory and
// the resume checkpoint, and hands all of it here.
//
// Exit codes of dtrainer: 0 done (or preempted after a checkpoint), 2 bad configuration (nothing
// written), 1 any other failure (every rank exits, the failing rank named).

#include <memory>
#include <string>

#include <torch/types.h>

#include "dtrainer/parallel/mpi_runtime.h"
#include "dtrainer/parallel/watchdog.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/evaluation.h"
#include "dtrainer/train/resume_plan.h"
#include "dtrainer/train/run_directory.h"
#include "dtrainer/train/startup_plan.h"
#include "dtrainer/train/train_config.h"

namespace dtrainer::train {

struct TrainerSetup {
  TrainConfig config;
  std::string config_toml;  // the resolved configuration, written to the run directory
  torch::Device device = torch::kCPU;
  DataPlan data;
  StartupPlan plan;
  ResumePlan resume;
  std::unique_ptr<AlignmentHook> align;  // null: alignment off
};

// Collective. Returns 0 when the run is done or preempted after a checkpoint; throws on failure.
// `watchdog` watches every phase; `dir` is locked by this process.
int train(TrainerSetup setup, parallel::MpiRuntime& rt, const RunDirectory& dir, parallel::Watchdog& watchdog);

}  // namespace dtrainer::train
