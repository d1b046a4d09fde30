#include "dtrainer/train/train_config.h"

#include <fstream>
#include <set>
#include <sstream>

#include <CLI/CLI.hpp>

#include "dtrainer/core/error.h"

namespace dtrainer::train {
namespace {

// "--global-batch,--global_batch": the dashed name for the command line, the snake_case one for
// TOML files (CLI11 matches a file's key against the option names).
std::string names(const std::string& snake) {
  std::string dashed = snake;
  for (char& c : dashed)
    if (c == '_') c = '-';
  return dashed == snake ? "--" + snake : "--" + dashed + ",--" + snake;
}

template <typename T>
CLI::Option* opt(CLI::App& app, const std::string& group, const std::string& key, T& field, const std::string& help) {
  return app.add_option(names(key), field, help)->group(group)->capture_default_str();
}

CLI::Option* flag(CLI::App& app, const std::string& group, const std::string& key, bool& field, const std::string& help) {
  // "--key" sets it, "--key=false" / `key = false` in TOML clears it.
  return app.add_flag(names(key), field, help)->group(group)->capture_default_str();
}

}  // namespace

void add_train_options(CLI::App& app, TrainConfig& c) {
  app.set_config("--config", "", "TOML file of options (flat snake_case keys); the command line overrides it")
      ->group("Run")
      ->check(CLI::ExistingFile);
  const CLI::Range positive(int64_t{1}, std::numeric_limits<int64_t>::max());
  const CLI::Range non_negative(int64_t{0}, std::numeric_limits<int64_t>::max());
  const CLI::Range probability(0.0, 1.0);

  const std::string run = "Run";
  opt(app, run, "name", c.name, "run name; the run directory defaults to runs/<name>");
  opt(app, run, "run_dir", c.run_dir, "run directory: metrics.jsonl, config.toml, ckpt/, samples/");
  opt(app, run, "steps", c.steps, "optimizer steps to train for (the total, counting resumed ones)")->check(positive);
  opt(app, run, "seed", c.seed, "seed of every random draw (initialisation, data order, noise, dropout)");
  opt(app, run, "log_every", c.log_every, "steps between metrics records and progress lines")->check(positive);
  opt(app, run, "eval_every", c.eval_every, "steps between held-out evaluations (0: at the end only)")->check(non_negative);
  opt(app, run, "ckpt_every", c.ckpt_every, "steps between checkpoints (0: at the end and on preemption only)")->check(non_negative);
  opt(app, run, "keep_ckpts", c.keep_ckpts, "complete checkpoints to keep (the oldest are deleted)")->check(positive);
  opt(app, run, "sample_every", c.sample_every, "steps between sample grids (0: at the end only)")->check(non_negative);
  opt(app, run, "resume", c.resume, "auto (newest complete checkpoint of the run, if any), none, or a checkpoint path");
  flag(app, run, "dry_run", c.dry_run, "build everything, print the plan, do not train");
  opt(app, run, "threads", c.threads, "compute threads per rank (0: cores on this node / ranks on it)")->check(non_negative);
  opt(app, run, "max_bad_steps", c.max_bad_steps, "abort after this many consecutive steps with a non-finite loss or gradient")->check(positive);
  opt(app, run, "peak_tflops", c.peak_tflops, "peak TFLOP/s per rank for MFU (0: measure an fp32 matmul at start-up)")->check(CLI::NonNegativeNumber);

  const std::string model = "Model";
  opt(app, model, "model", c.model, "backbone preset (dtmodel list)");
  opt(app, model, "model_set", c.model_set, "preset field overrides, key=value (dtmodel describe lists the keys)");
  opt(app, model, "sharding", c.sharding, "replicate | zero1 | zero2 | zero3")->check(CLI::IsMember({"replicate", "zero1", "zero2", "zero3"}));
  flag(app, model, "activation_checkpointing", c.activation_checkpointing, "recompute every block in backward (always on under zero3)");

  const std::string data = "Data";
  opt(app, data, "data", c.data, "shard directories, or synthetic:shapes (generated once in <run_dir>/data)");
  opt(app, data, "data_weights", c.data_weights, "mixing weights of the data directories (default: equal)");
  opt(app, data, "eval_data", c.eval_data, "held-out shard directories (synthetic data gets a held-out set of its own)");
  opt(app, data, "synthetic_images", c.synthetic_images, "images in the synthetic dataset")->check(positive);
  opt(app, data, "global_batch", c.global_batch, "samples per optimizer step, over all ranks")->check(positive);
  opt(app, data, "micro_batch", c.micro_batch, "samples per rank per forward (0: global_batch / ranks); accumulation = global / (ranks x micro)")->check(non_negative);
  opt(app, data, "workers", c.workers, "loader threads per rank")->check(positive);
  opt(app, data, "prefetch", c.prefetch, "batches prepared ahead per rank")->check(non_negative);
  opt(app, data, "p_synthetic_caption", c.p_synthetic_caption, "[S1] probability of a synthetic caption")->check(probability);
  opt(app, data, "synthetic_top_k", c.synthetic_top_k, "[S1] synthetic caption chosen among the top k")->check(positive);
  flag(app, data, "random_flip", c.random_flip, "horizontal flips (p = 0.5), flagged in the controls");
  opt(app, data, "text_padding", c.text_padding, "zero | replicate | noisy_replicate")->check(CLI::IsMember({"zero", "replicate", "noisy_replicate"}));
  opt(app, data, "max_tokens", c.max_tokens, "text tokens T the model attends to")->check(positive);

  const std::string optim = "Optimizer";
  opt(app, optim, "lr", c.lr, "peak learning rate")->check(CLI::PositiveNumber);
  opt(app, optim, "beta1", c.beta1, "AdamW beta1")->check(CLI::Range(0.0, 0.999999));
  opt(app, optim, "beta2", c.beta2, "AdamW beta2")->check(CLI::Range(0.0, 0.999999));
  opt(app, optim, "eps", c.eps, "AdamW epsilon")->check(CLI::PositiveNumber);
  opt(app, optim, "weight_decay", c.weight_decay, "AdamW decoupled weight decay")->check(CLI::NonNegativeNumber);
  opt(app, optim, "warmup_steps", c.warmup_steps, "linear warm-up steps")->check(non_negative);
  opt(app, optim, "lr_schedule", c.lr_schedule, "after warm-up: constant | cosine")->check(CLI::IsMember({"constant", "cosine"}));
  opt(app, optim, "min_lr_ratio", c.min_lr_ratio, "cosine ends at lr x this")->check(probability);
  opt(app, optim, "max_grad_norm", c.max_grad_norm, "global gradient-norm clipping (<= 0: off)");
  opt(app, optim, "ema_decay", c.ema_decay, "EMA of the weights (0: off); samples use the EMA when on")->check(CLI::Range(0.0, 0.999999999));

  const std::string diff = "Diffusion";
  opt(app, diff, "target", c.target, "eps | v | flow")->check(CLI::IsMember({"eps", "v", "flow"}));
  opt(app, diff, "loss_weighting", c.loss_weighting, "none | sigma_inv_sq | min_snr")->check(CLI::IsMember({"none", "sigma_inv_sq", "min_snr"}));
  opt(app, diff, "timestep_sampling", c.timestep_sampling, "uniform | logit_normal")->check(CLI::IsMember({"uniform", "logit_normal"}));
  opt(app, diff, "beta_schedule", c.beta_schedule, "scaled_linear | linear | cosine")->check(CLI::IsMember({"scaled_linear", "linear", "cosine"}));
  opt(app, diff, "num_timesteps", c.num_timesteps, "diffusion steps T")->check(CLI::Range(int64_t{2}, int64_t{100000}));
  flag(app, diff, "zero_terminal_snr", c.zero_terminal_snr, "rescale the schedule to zero terminal SNR (needs target = v)");
  opt(app, diff, "p_drop_text", c.p_drop_text, "classifier-free-guidance text dropout")->check(probability);
  opt(app, diff, "p_drop_control", c.p_drop_control, "[S2] control-condition dropout")->check(probability);
  flag(app, diff, "control_conditioning", c.control_conditioning, "[S2] control embedding (crop, flip, size) added to the time embedding");

  const std::string samples = "Samples";
  opt(app, samples, "sample_count", c.sample_count, "prompts sampled per grid")->check(non_negative);
  opt(app, samples, "sample_steps", c.sample_steps, "DDIM / Euler steps")->check(positive);
  opt(app, samples, "guidance_scale", c.guidance_scale, "classifier-free guidance scale")->check(CLI::NonNegativeNumber);
}

void parse_train_config(CLI::App& app, int argc, const char* const* argv) {
  // Unknown keys in the file: checked here against the option names, so that the error names the
  // key and the file (CLI11 alone would only say it could not parse an item).
  std::string file;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) file = argv[i + 1];
    else if (a.rfind("--config=", 0) == 0) file = a.substr(9);
  }
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw Error(file, "cannot open the config file");
    std::vector<CLI::ConfigItem> items;
    try {
      items = CLI::ConfigTOML().from_config(in);
    } catch (const CLI::ParseError& e) {
      throw Error(file, std::string("not valid TOML: ") + e.what());
    }
    for (const auto& item : items) {
      if (item.name == "++" || item.name == "--") {
        throw Error(file, "sections ([" + item.fullname() + "]) are not supported: use flat keys");
      }
      if (!item.parents.empty()) throw Error(file, "key '" + item.fullname() + "': sections are not supported, use flat keys");
      const CLI::Option* o = app.get_option_no_throw("--" + item.name);
      if (!o || item.name == "config") throw Error(file, "unknown key '" + item.name + "' (dtrainer --help lists the options; TOML keys are snake_case)");
    }
  }
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.parse(argc, argv);
}

void validate_train_config(const TrainConfig& c, int world) {
  if (c.global_batch % world != 0)
    throw Error("global_batch", std::to_string(c.global_batch) + " is not divisible by the " + std::to_string(world) + " ranks");
  const int64_t per_rank = c.global_batch / world;
  const int64_t micro = c.micro_batch ? c.micro_batch : per_rank;
  if (per_rank % micro != 0)
    throw Error("micro_batch", std::to_string(micro) + " does not divide the per-rank batch " + std::to_string(per_rank) +
                                   " (global_batch " + std::to_string(c.global_batch) + " / " + std::to_string(world) + " ranks)");
  if (c.data.empty()) throw Error("data", "no data directory given");
  if (!c.data_weights.empty() && c.data_weights.size() != c.data.size())
    throw Error("data_weights", std::to_string(c.data_weights.size()) + " weights for " + std::to_string(c.data.size()) + " data directories");
  for (const auto& d : c.data)
    if (d.rfind("synthetic:", 0) == 0 && d != "synthetic:shapes")
      throw Error("data", "unknown synthetic dataset '" + d + "' (synthetic:shapes exists)");
  if (c.zero_terminal_snr && c.target != "v") throw Error("zero_terminal_snr", "needs target = v");
  if (c.warmup_steps > c.steps) throw Error("warmup_steps", std::to_string(c.warmup_steps) + " exceeds steps " + std::to_string(c.steps));
  for (const auto& kv : c.model_set)
    if (kv.find('=') == std::string::npos) throw Error("model_set", "'" + kv + "' is not key=value");
}

std::string train_config_toml(const CLI::App& app) {
  // CLI11 writes every option under its first name (dashed); TOML keys are the snake_case ones.
  std::istringstream in(app.config_to_str(true, false));
  std::ostringstream out;
  out << "# fully resolved dtrainer configuration (dtrainer --config reads it back)\n";
  for (std::string line; std::getline(in, line);) {
    const size_t eq = line.find('=');
    if (eq == std::string::npos || line.empty() || line[0] == '#') continue;
    std::string key = line.substr(0, eq);
    if (key == "config" || key == "dry-run" || key == "dry_run") continue;
    for (char& ch : key)
      if (ch == '-') ch = '_';
    out << key << " = " << line.substr(eq + 1) << "\n";
  }
  return out.str();
}

}  // namespace dtrainer::train
