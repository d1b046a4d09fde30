#pragma once
// The training objective (SPEC §3): draw timesteps and noise, build x_t and the regression target,
// weight the loss, and decide classifier-free-guidance dropout — every draw keyed by
// (seed, purpose, step, global sample id), so results do not depend on the rank layout.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/diffusion/objective_choices.h"
#include "dtrainer/diffusion/schedule.h"

namespace dtrainer::diffusion {

struct ObjectiveConfig {
  Target target = Target::kEps;
  LossWeighting weighting = LossWeighting::kNone;
  double min_snr_gamma = 5.0;
  TimestepSampling sampling = TimestepSampling::kUniform;
  double logit_mean = 0.0;  // logit-normal(m, s): t = sigmoid(N(m, s^2))
  double logit_std = 1.0;
  double p_drop_text = 0.0;         // probability the text condition is replaced by the null text
  double p_drop_control = 0.0;      // independent probability the control conditions are dropped
  double flow_time_scale = 1000.0;  // the flow model sees t * flow_time_scale as its timestep
  uint64_t seed = 0;
};

struct NoisedBatch {
  torch::Tensor x_t;           // [B, ...]
  torch::Tensor target;        // [B, ...]
  torch::Tensor weight;        // [B] loss weight per sample
  torch::Tensor t_model;       // [B] float: DDPM index t, or flow t * flow_time_scale — the model's input
  torch::Tensor t_unit;        // [B] float in [0, 1], 1 = pure noise (for gamma_c)
  torch::Tensor snr;           // [B] signal-to-noise ratio of each sample's x_t
  torch::Tensor keep_text;     // [B] bool: false = use the null text for this sample
  torch::Tensor keep_control;  // [B] bool: false = drop this sample's control conditions
};

class Objective {
 public:
  // Validates the config (throws Error naming the "objective.<field>"); the schedule is unused
  // for rectified flow. eps / sigma^-2 with a zero-terminal-SNR schedule is rejected.
  Objective(const ObjectiveConfig& config, NoiseSchedule schedule);

  // x0 [B, ...] clean latents; sample_ids [B] their global ids; step the optimizer step.
  NoisedBatch make_batch(const torch::Tensor& x0, const std::vector<int64_t>& sample_ids, int64_t step) const;
  // For held-out evaluation: every sample at the same unit time unit_t in (0, 1) (DDPM index
  // round(unit_t (T - 1)), or flow t = unit_t), noise keyed by kEvalStep, nothing dropped.
  static constexpr int64_t kEvalStep = -1;
  NoisedBatch make_eval_batch(const torch::Tensor& x0, const std::vector<int64_t>& sample_ids, double unit_t) const;
  // Weighted loss: mean over the batch of weight * mean squared error of the sample.
  torch::Tensor loss(const torch::Tensor& prediction, const NoisedBatch& batch) const;
  // Loss weight for one sample of signal-to-noise `snr` (flow: its t, for the min-SNR factor).
  double loss_weight(double snr, double flow_t) const;

  const ObjectiveConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return schedule_; }

  // The deterministic draws, exposed for samplers and tests.
  int64_t draw_timestep(int64_t sample_id, int64_t step) const;                            // DDPM index
  double draw_flow_time(int64_t sample_id, int64_t step) const;                            // flow t in (0, 1)
  torch::Tensor draw_noise(at::IntArrayRef shape, int64_t sample_id, int64_t step) const;  // fp32 CPU

 private:
  double draw_unit(int64_t sample_id, int64_t step) const;
  NoisedBatch build_batch(const torch::Tensor& x0, const std::vector<int64_t>& ids, int64_t step,
                          double fixed_unit_t) const;  // u in (0,1) per the sampling rule
  ObjectiveConfig config_;
  NoiseSchedule schedule_;
};

// A CPU generator seeded from a stream key (core/rng.h).
at::Generator keyed_generator(uint64_t key);

}  // namespace dtrainer::diffusion
