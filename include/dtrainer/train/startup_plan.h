#pragma once
// What a run is, worked out before anything is built: the backbone and its cost, the batch split
// over ranks, the compute per sample ([S1]'s C and the FLOPs behind TFLOP/s and MFU), and the
// printed plan (`--dry-run` and the start of every run), with the memory estimate
// (train/memory_plan.h). Also the one-time synthesis of the built-in datasets.

#include <cstdint>
#include <string>

#include <mpi.h>

#include "dtrainer/models/backbone.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/stage_transfer.h"
#include "dtrainer/train/train_config.h"

namespace dtrainer::train {

struct StartupPlan {
  models::BackboneSpec backbone;
  models::BackboneCost cost;
  int64_t world = 1, per_rank = 0, micro = 0, accumulation = 1;
  int64_t train_flops_per_sample = 0;  // 3 x forward FLOPs, all MACs (for TFLOP/s and MFU)
  double gflops_per_sample_s1 = 0;     // [S1]: 3 x 2 x linear/conv MACs, in GFLOPs (compute C)
  StageSettings stage;                 // [S2]'s stage transfer (train/stage_transfer.h)
  std::string stage_line;              // its plan line ("" when nothing applies)
};

StartupPlan make_startup_plan(const TrainConfig& c, const DataPlan& d, int world);

// The plan as `dtrainer` prints it; `device` says where it computes.
std::string describe_plan(const TrainConfig& c, const DataPlan& d, const StartupPlan& p, const std::string& device);

// The lines a fresh run starts with: the backbone's summary, then steps, batch, ranks, device
// (`device`, as people read it), sharding and run directory.
std::string describe_run(const TrainConfig& c, const StartupPlan& p, const std::string& device,
                         const std::string& run_dir);

// Rank 0 writes the synthetic datasets ("synthetic:shapes") once, a later run reuses them; the
// others wait. Collective over `comm` (a failure is every rank's).
void synthesize_if_needed(const TrainConfig& c, const DataPlan& p, int rank, MPI_Comm comm);

}  // namespace dtrainer::train
