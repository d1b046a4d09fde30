#include "dtrainer/train/component_configs.h"

#include "dtrainer/diffusion/schedule.h"
#include "dtrainer/train/stage_transfer.h"

namespace dtrainer::train {

TrainingStackConfig training_stack_config(const TrainConfig& c, const StartupPlan& plan, bool resuming) {
  TrainingStackConfig sc;
  sc.backbone = plan.backbone;
  sc.seed = c.seed;
  if (!resuming) {
    sc.init_weights = c.init_weights;
    sc.init_from = c.init_from;
    sc.init_from_weights = c.init_from_weights;
  }
  sc.sharding.strategy = c.sharding;
  sc.sharding.adamw = {c.lr, c.beta1, c.beta2, c.eps, c.weight_decay};
  sc.sharding.activation_checkpointing = c.activation_checkpointing;
  sc.sharding.ema_decay = exponential_ema_decay(c);
  sc.sharding.phema_sigma_rel = phema_profiles(c);
  sc.sharding.compute_dtype = parallel::scalar_type(c.compute_dtype);
  return sc;
}

diffusion::TextPaddingConfig text_padding_config(const TrainConfig& c) {
  diffusion::TextPaddingConfig p;
  p.policy = c.text_padding;
  p.max_tokens = c.max_tokens;
  p.beta_txt = c.text_noise_beta;
  p.seed = c.seed;
  return p;
}

data::LoaderConfig training_loader_config(const TrainConfig& c, const DataPlan& data, int rank, int world) {
  data::LoaderConfig lc;
  lc.dirs = data.train_dirs;
  lc.weights = c.data_weights;
  lc.global_batch = c.global_batch;
  lc.rank = rank;
  lc.world = world;
  lc.seed = c.seed;
  lc.p_synthetic_caption = c.p_synthetic_caption;
  lc.synthetic_top_k = c.synthetic_top_k;
  lc.random_flip = c.random_flip;
  lc.padding = text_padding_config(c);
  lc.prefetch = c.prefetch;
  lc.workers = c.workers;
  lc.skip_bad_samples = c.skip_bad_samples;
  if (!c.crop_scale.empty()) {
    lc.crop_scale = {c.crop_scale[0], c.crop_scale[1]};
    lc.crop_size = c.crop_size;
  }
  return lc;
}

std::unique_ptr<diffusion::Objective> make_objective(const TrainConfig& c, int64_t latent_size) {
  diffusion::ScheduleConfig sched;
  sched.kind = c.beta_schedule;
  sched.num_timesteps = c.num_timesteps;
  sched.zero_terminal_snr = c.zero_terminal_snr;
  sched.resolution_scale = noise_schedule_scale_value(c, run_resolution_scale(c, latent_size));  // [S2] Eq. 3
  diffusion::ObjectiveConfig oc;
  oc.target = c.target;
  oc.weighting = c.loss_weighting;
  oc.sampling = c.timestep_sampling;
  oc.p_drop_text = c.p_drop_text;
  oc.p_drop_control = c.p_drop_control;
  oc.seed = c.seed;
  return std::make_unique<diffusion::Objective>(oc, diffusion::NoiseSchedule::make(sched));
}

SamplerSetup sampler_setup(const TrainConfig& c, const DataPlan& data) {
  SamplerSetup s;
  s.steps = c.sample_steps;
  s.seed = c.seed;
  s.channels_last = c.channels_last;
  s.guidance = sampling_guidance_scale(c, data.inputs.latent_size);  // ([S2] Eq. 4 for a stage)
  s.controls = resolve_run_backbone(c, data.inputs).control_conditioning();
  s.control_beta = c.control_guidance;
  // The original size of an image of this data in pixels (latents: the SDXL-VAE's factor 8).
  const double side = static_cast<double>(data.inputs.latent_size) * (data.pixels ? 1.0 : 8.0);
  s.original_size = {side, side};
  return s;
}

LrSchedule make_lr_schedule(const TrainConfig& c) {
  return {c.lr, c.warmup_steps, c.steps, c.lr_schedule == LrDecay::kCosine, c.min_lr_ratio};
}

}  // namespace dtrainer::train
