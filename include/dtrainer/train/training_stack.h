#pragma once
// The training stack, built one way for the trainer and `dtbench train`: the model (initialised
// identically on every rank from `seed`, optionally from a weights file), moved to the device,
// the communicator for tensors there, and the sharded parameters that own the optimizer state.
// And the one MFU formula both report.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/parallel/communicator.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/ckpt/weights_source.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/models/parameter_layout.h"

namespace dtrainer::train {

struct TrainingStackConfig {
  models::BackboneSpec backbone;
  uint64_t seed = 0;
  std::string init_weights;  // a safetensors file of the model's parameters ("" none)
  std::string init_from;     // a stage's source: a checkpoint, a run directory or a weights file ("" none)
  ckpt::WeightsSource init_from_weights = ckpt::WeightsSource::kAuto;
  parallel::ShardingConfig sharding;
};

struct TrainingStack {
  std::unique_ptr<parallel::Communicator> comm;
  std::unique_ptr<models::Backbone> model;
  std::unique_ptr<parallel::ShardedParameters> params;
  std::vector<models::UnitLayout> layout;  // where each named parameter lives in a checkpoint
};

// Collective (the communicator and the sharded parameters are).
TrainingStack build_training_stack(const TrainingStackConfig& c, const parallel::MpiRuntime& rt,
                                   const torch::Device& device);

// MFU's denominator, per rank: `configured` (peak_tflops) when positive, else the measured matmul
// rate of a GPU in the compute dtype, or of the CPU in fp32 (its bf16 is emulated: no peak).
double peak_tflops_per_rank(double configured, const torch::Device& device, parallel::ComputeDtype compute_dtype);
// Model FLOPs utilisation: the training FLOPs achieved (FLOPs per sample x samples per second, all
// ranks) over the ranks' peak (peak_tflops per rank x ranks).
double achieved_tflops(double flops_per_sample, double samples_per_s);
double model_flops_utilization(double flops_per_sample, double samples_per_s, double peak_tflops_per_rank,
                               int64_t ranks);

}  // namespace dtrainer::train
