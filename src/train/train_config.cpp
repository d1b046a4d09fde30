#include "dtrainer/train/train_config.h"

#include <cstdio>
#include <fstream>
#include <functional>
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

// TOML values, written so that CLI11 reads them back to the same field.
std::string toml_value(const std::string& v) {
  std::string out = "\"";
  for (char ch : v) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}
std::string toml_value(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
std::string toml_value(int64_t v) { return std::to_string(v); }
std::string toml_value(uint64_t v) { return std::to_string(v); }
std::string toml_value(bool v) { return v ? "true" : "false"; }
template <typename T>
std::string toml_value(const std::vector<T>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + toml_value(v[i]);
  return out + "]";
}

// Every field's TOML line, in registration order (filled by add_train_options through opt/flag).
using TomlLines = std::vector<std::pair<std::string, std::function<std::string()>>>;

template <typename T>
CLI::Option* opt(CLI::App& app, const std::string& group, const std::string& key, T& field, const std::string& help,
                 TomlLines* lines) {
  if (lines) lines->emplace_back(key, [&field] { return toml_value(field); });
  return app.add_option(names(key), field, help)->group(group)->capture_default_str();
}

CLI::Option* flag(CLI::App& app, const std::string& group, const std::string& key, bool& field, const std::string& help,
                  TomlLines* lines) {
  if (lines) lines->emplace_back(key, [&field] { return toml_value(field); });
  // "--key" sets it, "--key=false" / `key = false` in TOML clears it.
  return app.add_flag(names(key), field, help)->group(group)->capture_default_str();
}

void add_options(CLI::App& app, TrainConfig& c, TomlLines* lines);

}  // namespace

void add_train_options(CLI::App& app, TrainConfig& c) { add_options(app, c, nullptr); }

std::string train_config_toml(const TrainConfig& config) {
  TrainConfig copy = config;
  CLI::App scratch;
  TomlLines lines;
  add_options(scratch, copy, &lines);
  std::string out = "# fully resolved dtrainer configuration (dtrainer --config reads it back)\n";
  for (const auto& [key, value] : lines) {
    if (key == "dry_run") continue;
    const std::string v = value();
    if (v == "[]") continue;  // an empty list is its option's default; CLI11 cannot read `key = []`
    out += key + " = " + v + "\n";
  }
  return out;
}

namespace {
void add_options(CLI::App& app, TrainConfig& c, TomlLines* lines) {
  app.set_config("--config", "", "TOML file of options (flat snake_case keys); the command line overrides it")
      ->group("Run")
      ->check(CLI::ExistingFile);
  const auto& positive = CLI::PositiveNumber;
  const auto& non_negative = CLI::NonNegativeNumber;
  const CLI::Range probability(0.0, 1.0);

  const std::string run = "Run";
  opt(app, run, "name", c.name, "run name; the run directory defaults to runs/<name>", lines);
  opt(app, run, "run_dir", c.run_dir, "run directory: metrics.jsonl, config.toml, ckpt/, samples/", lines);
  opt(app, run, "steps", c.steps, "optimizer steps to train for (the total, counting resumed ones)", lines)->check(positive);
  opt(app, run, "seed", c.seed, "seed of every random draw (initialisation, data order, noise, dropout)", lines);
  opt(app, run, "log_every", c.log_every, "steps between metrics records and progress lines", lines)->check(positive);
  opt(app, run, "eval_every", c.eval_every, "steps between held-out evaluations (0: at the end only)", lines)->check(non_negative);
  opt(app, run, "ckpt_every", c.ckpt_every, "steps between checkpoints (0: at the end and on preemption only)", lines)->check(non_negative);
  opt(app, run, "keep_ckpts", c.keep_ckpts, "complete checkpoints to keep (the oldest are deleted)", lines)->check(positive);
  opt(app, run, "sample_every", c.sample_every, "steps between sample grids (0: at the end only)", lines)->check(non_negative);
  opt(app, run, "resume", c.resume, "auto (newest complete checkpoint of the run, if any), none, or a checkpoint path", lines);
  flag(app, run, "dry_run", c.dry_run, "build everything, print the plan, do not train", lines);
  opt(app, run, "device", c.device,
      "auto | cpu | cuda: where each rank computes (auto: GPU <node-local rank> where LibTorch sees GPUs, else the CPU)", lines)
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  opt(app, run, "threads", c.threads, "compute threads per rank (0: cores on this node / ranks on it)", lines)->check(non_negative);
  opt(app, run, "max_bad_steps", c.max_bad_steps, "abort after this many consecutive steps with a non-finite loss or gradient", lines)->check(positive);
  opt(app, run, "peak_tflops", c.peak_tflops, "peak TFLOP/s per rank for MFU (0: measure a matmul at start-up: fp32 on the CPU, the compute dtype on a GPU)", lines)->check(CLI::NonNegativeNumber);

  const std::string model = "Model";
  opt(app, model, "model", c.model, "backbone preset (dtmodel list)", lines);
  opt(app, model, "model_set", c.model_set, "preset field overrides, key=value (dtmodel describe lists the keys)", lines);
  opt(app, model, "sharding", c.sharding, "replicate | zero1 | zero2 | zero3", lines)->check(CLI::IsMember({"replicate", "zero1", "zero2", "zero3"}));
  flag(app, model, "activation_checkpointing", c.activation_checkpointing, "recompute every block in backward (always on under zero3)", lines);
  opt(app, model, "compute_dtype", c.compute_dtype, "fp32 | bf16: what the model computes in (bf16: a compute copy of fp32 master weights)", lines)
      ->check(CLI::IsMember({"fp32", "bf16"}));
  flag(app, model, "channels_last", c.channels_last,
       "NHWC activations: the UNet's convolutions run channels-last (on a GPU in bf16 usually faster; "
       "dtbench train --channels-last measures it)", lines);
  opt(app, model, "init_weights", c.init_weights,
      "safetensors weights (dtckpt export) to start from instead of a random initialisation; names and shapes must match "
      "the model; a checkpoint being resumed takes precedence", lines);

  const std::string data = "Data";
  opt(app, data, "data", c.data, "shard directories, or synthetic:shapes (generated once in <run_dir>/data)", lines);
  opt(app, data, "data_weights", c.data_weights, "mixing weights of the data directories (default: equal)", lines);
  opt(app, data, "eval_data", c.eval_data, "held-out shard directories (synthetic data gets a held-out set of its own)", lines);
  opt(app, data, "synthetic_images", c.synthetic_images, "images in the synthetic dataset", lines)->check(positive);
  opt(app, data, "synthetic_image_size", c.synthetic_image_size, "pixels per side of the synthetic images (a multiple of 8)", lines)
      ->check(CLI::Range(int64_t{8}, int64_t{512}));
  opt(app, data, "global_batch", c.global_batch, "samples per optimizer step, over all ranks", lines)->check(positive);
  opt(app, data, "micro_batch", c.micro_batch, "samples per rank per forward (0: global_batch / ranks); accumulation = global / (ranks x micro)", lines)->check(non_negative);
  opt(app, data, "workers", c.workers, "loader threads per rank", lines)->check(positive);
  opt(app, data, "prefetch", c.prefetch, "batches prepared ahead per rank", lines)->check(non_negative);
  opt(app, data, "p_synthetic_caption", c.p_synthetic_caption, "[S1] probability of a synthetic caption", lines)->check(probability);
  opt(app, data, "synthetic_top_k", c.synthetic_top_k, "[S1] synthetic caption chosen among the top k", lines)->check(positive);
  flag(app, data, "random_flip", c.random_flip, "horizontal flips (p = 0.5), flagged in the controls", lines);
  opt(app, data, "text_padding", c.text_padding, "zero | replicate | noisy_replicate", lines)->check(CLI::IsMember({"zero", "replicate", "noisy_replicate"}));
  opt(app, data, "max_tokens", c.max_tokens, "text tokens T the model attends to", lines)->check(positive);

  const std::string optim = "Optimizer";
  opt(app, optim, "lr", c.lr, "peak learning rate", lines)->check(CLI::PositiveNumber);
  opt(app, optim, "beta1", c.beta1, "AdamW beta1", lines)->check(CLI::Range(0.0, 0.999999));
  opt(app, optim, "beta2", c.beta2, "AdamW beta2", lines)->check(CLI::Range(0.0, 0.999999));
  opt(app, optim, "eps", c.eps, "AdamW epsilon", lines)->check(CLI::PositiveNumber);
  opt(app, optim, "weight_decay", c.weight_decay, "AdamW decoupled weight decay", lines)->check(CLI::NonNegativeNumber);
  opt(app, optim, "warmup_steps", c.warmup_steps, "linear warm-up steps", lines)->check(non_negative);
  opt(app, optim, "lr_schedule", c.lr_schedule, "after warm-up: constant | cosine", lines)->check(CLI::IsMember({"constant", "cosine"}));
  opt(app, optim, "min_lr_ratio", c.min_lr_ratio, "cosine ends at lr x this", lines)->check(probability);
  opt(app, optim, "max_grad_norm", c.max_grad_norm, "global gradient-norm clipping (<= 0: off)", lines);
  opt(app, optim, "ema_decay", c.ema_decay, "EMA of the weights (0: off); samples use the EMA when on", lines)->check(CLI::Range(0.0, 0.999999999));

  const std::string diff = "Diffusion";
  opt(app, diff, "target", c.target, "eps | v | flow", lines)->check(CLI::IsMember({"eps", "v", "flow"}));
  opt(app, diff, "loss_weighting", c.loss_weighting, "none | sigma_inv_sq | min_snr", lines)->check(CLI::IsMember({"none", "sigma_inv_sq", "min_snr"}));
  opt(app, diff, "timestep_sampling", c.timestep_sampling, "uniform | logit_normal", lines)->check(CLI::IsMember({"uniform", "logit_normal"}));
  opt(app, diff, "beta_schedule", c.beta_schedule, "scaled_linear | linear | cosine", lines)->check(CLI::IsMember({"scaled_linear", "linear", "cosine"}));
  opt(app, diff, "num_timesteps", c.num_timesteps, "diffusion steps T", lines)->check(CLI::Range(int64_t{2}, int64_t{100000}));
  flag(app, diff, "zero_terminal_snr", c.zero_terminal_snr, "rescale the schedule to zero terminal SNR (needs target = v)", lines);
  opt(app, diff, "p_drop_text", c.p_drop_text, "classifier-free-guidance text dropout", lines)->check(probability);
  opt(app, diff, "p_drop_control", c.p_drop_control, "[S2] control-condition dropout", lines)->check(probability);
  flag(app, diff, "control_conditioning", c.control_conditioning, "[S2] control embedding (crop, flip, size) added to the time embedding", lines);

  const std::string samples = "Samples";
  opt(app, samples, "sample_count", c.sample_count, "prompts sampled per grid", lines)->check(non_negative);
  opt(app, samples, "sample_steps", c.sample_steps, "DDIM / Euler steps", lines)->check(positive);
  opt(app, samples, "guidance_scale", c.guidance_scale, "classifier-free guidance scale", lines)->check(CLI::NonNegativeNumber);
}

}  // namespace

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

}  // namespace dtrainer::train
