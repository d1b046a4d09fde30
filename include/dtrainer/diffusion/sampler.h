#pragma once
// Samplers (SPEC §3): DDIM for the DDPM schedules (eta configurable, 50 steps by default, [S1]'s
// evaluation) and Euler for rectified-flow models. Deterministic for a given seed.

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "dtrainer/diffusion/guidance.h"
#include "dtrainer/diffusion/objective.h"
#include "dtrainer/diffusion/schedule.h"

namespace dtrainer::diffusion {

// `steps` timesteps evenly spaced from T-1 down to 0 (both included), strictly decreasing.
std::vector<int64_t> ddim_timesteps(int64_t num_train_timesteps, int64_t steps);

struct DdimConfig {
  int64_t steps = 50;
  double eta = 0.0;                  // 0 = deterministic DDIM, 1 = DDPM-like ancestral noise
  Target prediction = Target::kEps;  // what the denoiser predicts: eps or v
  uint64_t seed = 0;                 // for the eta > 0 noise
};

// Runs DDIM from x_start (at the first timestep, t = T-1) down to x_0.
torch::Tensor ddim_sample(const NoiseSchedule& schedule, const Denoiser& denoiser, torch::Tensor x_start,
                          const DdimConfig& config);

struct EulerConfig {
  int64_t steps = 50;
  double time_scale = 1000.0;  // the model sees t * time_scale
};

// Integrates dx/dt = u(x, t) (u = eps - x0, the flow velocity) from t = 1 to t = 0 on a uniform grid.
torch::Tensor euler_flow_sample(const Denoiser& denoiser, torch::Tensor x_1, const EulerConfig& config);

// The sampler the objective's target calls for: Euler for rectified flow (the objective's time
// scale), DDIM (eta 0, predicting eps or v) otherwise. `seed` keys DDIM's noise when eta > 0.
torch::Tensor sample_for_objective(const Objective& objective, const Denoiser& denoiser, torch::Tensor x_start,
                                   int64_t steps, uint64_t seed);

// Standard-normal starting noise for sample `index` of a sampling run seeded with `seed`.
torch::Tensor initial_noise(at::IntArrayRef shape, uint64_t seed, int64_t index = 0);

}  // namespace dtrainer::diffusion
