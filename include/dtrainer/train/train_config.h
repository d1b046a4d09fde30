#pragma once
// Everything a training run is configured by. Every field is a command-line option and a key of
// the TOML file given with --config (flat keys, snake_case: `global_batch = 2048`); the command
// line overrides the file. A choice is a typed enum whose one name table (core/name_table.h)
// gives the names the options accept, --help lists and config.toml records. The defaults are the quickstart: synthetic
// shapes, a tiny UNet, two CPU ranks, a few minutes.

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/ckpt/weights_source.h"
#include "dtrainer/diffusion/objective_choices.h"
#include "dtrainer/diffusion/schedule.h"
#include "dtrainer/diffusion/text_padding_policy.h"
#include "dtrainer/parallel/device_choice.h"
#include "dtrainer/parallel/sharding_strategy.h"
#include "dtrainer/train/lr_schedule.h"
#include "dtrainer/train/stage_transfer.h"
#include "dtrainer/train/weight_averaging.h"

namespace CLI {
class App;
}

namespace dtrainer::train {

struct TrainConfig {
  // Run
  std::string name = "quickstart";
  std::string run_dir;  // default runs/<name>
  int64_t steps = 600;
  uint64_t seed = 0;
  int64_t log_every = 10;
  int64_t eval_every = 200;  // held-out loss on a fixed timestep grid; 0 = only at the end
  int64_t align_every =
      -1;  // alignment score (train/evaluation.h); -1 = auto: eval_every's steps on the shapes world, else off; 0 = off
  // Extra steps at which both the held-out loss and the alignment score run (a scaling study's
  // geometric schedule, dtstudy), besides eval_every's and align_every's; each in [1, steps].
  std::vector<int64_t> eval_steps;
  int64_t align_prompts = 32;  // held-out prompts it samples (the first N of eval_prompts.json)
  int64_t ckpt_every = 200;    // 0 = only at the end (and on preemption)
  int64_t keep_ckpts = 2;
  int64_t sample_every = 0;     // 0 = only at the end
  std::string resume = "auto";  // auto | none | PATH
  bool dry_run = false;
  parallel::DeviceChoice device = parallel::DeviceChoice::kAuto;  // auto = cuda:<node-local rank> where there are GPUs
  int64_t threads = 0;                                            // per rank; 0 = cores / ranks on this node
  int64_t max_bad_steps = 5;                                      // abort after this many consecutive non-finite steps
  double peak_tflops = 0;  // per rank, for MFU; 0 = measure a matmul at start-up (CPU: fp32; GPU: the compute dtype)
  double watchdog_timeout = 1800;    // seconds a phase may run at all (0 = no watchdog; parallel/watchdog.h)
  double watchdog_factor = 20;       // ...or this many times its recent median,
  double watchdog_min = 120;         // ...when that is longer than this
  bool ignore_memory_check = false;  // start although the plan exceeds the node's available memory

  // Model
  std::string model = "unet-tiny";
  std::vector<std::string> model_set;  // key=value overrides of the preset's fields
  parallel::ShardingStrategy sharding = parallel::ShardingStrategy::kReplicate;
  bool activation_checkpointing = false;
  // bf16: a bf16 compute copy; masters, gradients' reduction and the update stay fp32
  parallel::ComputeDtype compute_dtype = parallel::ComputeDtype::kFp32;
  bool channels_last = false;  // NHWC latents, so the UNet's convolutions run channels-last (cuDNN's fast bf16 layout)
  std::string init_weights;    // a safetensors file (dtckpt export) to start from instead of random weights

  // Stages ([S2]: pre-train at low resolution, fine-tune at high; train/stage_transfer.h)
  std::string init_from;  // RUN_DIR | CHECKPOINT | FILE to start from (optimizer state fresh, EMA = the weights)
  ckpt::WeightsSource init_from_weights = ckpt::WeightsSource::kAuto;  // which weights of a checkpoint
  PosEmbedTransfer pos_embed_transfer = PosEmbedTransfer::kAuto;
  std::string noise_schedule_scale = "auto";  // Eq. 3's s'/s: auto (the stage's S; 1 without init_from) or a number
  bool guidance_transfer = false;             // sample with Eq. 4's scale for S instead of guidance_scale
  int64_t init_from_size = 0;                 // the source's latent side (0: read from it; recorded)
  double init_from_scale = 0;                 // the source's own resolution scale (0: read from it; recorded)

  // Data
  std::vector<std::string> data = {"synthetic:shapes"};  // shard dirs, or synthetic:shapes (built in <run_dir>/data)
  std::vector<double> data_weights;
  std::vector<std::string> eval_data;  // held-out shard dirs; synthetic data gets its own
  int64_t synthetic_images = 4096;
  int64_t synthetic_image_size = 16;  // pixels per side of the synthetic shapes
  int64_t global_batch = 32;
  int64_t micro_batch = 0;  // per rank; 0 = global_batch / ranks (no accumulation)
  int64_t workers = 1;
  int64_t prefetch = 2;
  double p_synthetic_caption = 0.5;
  int64_t synthetic_top_k = 5;
  bool skip_bad_samples = false;  // drop and count unreadable / non-finite samples instead of failing
  bool random_flip = true;
  // [S2] crop-scale pre-training on pixel-space data (data/crop_scale.h): [lo, hi] fractions of the
  // side (empty: off; [S2]: global [0.9, 1], local [0.4, 0.6], mixed [0.4, 1]), resized to crop_size.
  std::vector<double> crop_scale;
  int64_t crop_size = 0;  // the side crops are resized to (the model's input); 0 = the stored side
  diffusion::TextPadding text_padding = diffusion::TextPadding::kZero;
  double text_noise_beta = 0.02;  // noisy_replicate: [S2]'s beta_txt, the variance of the copies' noise
  int64_t max_tokens = 77;

  // Optimizer
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t warmup_steps = 20;
  LrDecay lr_schedule = LrDecay::kConstant;
  double min_lr_ratio = 0.0;   // cosine ends at lr * min_lr_ratio
  double max_grad_norm = 1.0;  // <= 0: no clipping
  // Weight averages (train/weight_averaging.h): an exponential EMA, EDM2's power-function profiles, or none.
  WeightAveraging ema = WeightAveraging::kExponential;
  double ema_decay = 0.999;  // exponential: 0 = no EMA; warmed up as min(decay, (1 + step) / (10 + step))
  std::vector<double> phema_sigma_rel = {0.05, 0.10};  // phema: the profiles tracked (EDM2's defaults)
  int64_t phema_snapshot_images = 0;                   // phema: images between snapshots; 0 = ~32 per run
  SnapshotDtype phema_snapshot_dtype = SnapshotDtype::kFp16;

  // Diffusion
  diffusion::Target target = diffusion::Target::kEps;
  diffusion::LossWeighting loss_weighting = diffusion::LossWeighting::kNone;
  diffusion::TimestepSampling timestep_sampling = diffusion::TimestepSampling::kUniform;
  diffusion::BetaSchedule beta_schedule = diffusion::BetaSchedule::kScaledLinear;
  int64_t num_timesteps = 1000;
  bool zero_terminal_snr = false;
  double p_drop_text = 0.1;
  double p_drop_control = 0.0;
  bool control_conditioning = false;

  // Samples
  int64_t sample_count = 8;
  std::string vae;  // diffusers AutoencoderKL folder: latent-space samples are also written decoded, as PNG
  int64_t sample_steps = 50;
  double guidance_scale = 3.0;
  double control_guidance = 1.0;  // [S2] Eq. 2's beta for models with controls (1: plain classifier-free guidance)
};

// Registers every field as an option (grouped for --help), plus --config FILE. Values the options
// check (ranges, choices) fail at parse time naming the option.
void add_train_options(CLI::App& app, TrainConfig& config);

// Parses argv into config: --config FILE is read first (unknown keys are errors naming the key and
// the file), then the command line. Throws CLI::ParseError (also for --help) or dtrainer::Error.
void parse_train_config(CLI::App& app, int argc, const char* const* argv);

// Cross-field checks the options cannot express (global batch vs ranks and micro-batch, ...);
// throws Error naming the field. `world` is the number of ranks.
void validate_train_config(const TrainConfig& config, int world);

// A configuration recorded as TOML (config.toml, a checkpoint's config_toml) read back; `source`
// names it in errors. Throws Error.
TrainConfig train_config_from_toml(const std::string& toml, const std::string& source);

// A job file's text read as --config reads a file (unknown keys, types and values checked; errors
// name `source`), without a command line. Throws Error.
TrainConfig read_job_text(const std::string& text, const std::string& source);

// The fully resolved configuration as TOML that --config reads back.
std::string train_config_toml(const TrainConfig& config);

}  // namespace dtrainer::train
