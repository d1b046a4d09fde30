#include "dtrainer/train/train_config.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <type_traits>
#include <functional>
#include <set>
#include <sstream>

#include <CLI/CLI.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/core/name_table.h"
#include "dtrainer/core/parse.h"
#include "dtrainer/train/job_file.h"

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
std::string toml_value(const std::string& v) { return toml_string(v); }
std::string toml_value(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string out = buf;
  if (out.find_first_of(".eEn") == std::string::npos) out += ".0";  // (a TOML float, not an integer: "1.0")
  return out;
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

// ---- Value checks with messages that say what was wrong -----------------------------------
// (CLI11's PositiveNumber / Range print "Value 0 not in range 0.000000 to 1797693..." for a zero,
// a negative value and a word alike, and its integer conversion clamps what overflows.)

// An integer in [lo, hi]: not a word, not a fraction, not out of int64's range.
CLI::Validator integer_in(int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max()) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        int64_t v = 0;
        try {
          v = parse_int("", text);
        } catch (const Error& e) {
          return e.detail() + (e.detail().find("out of range") != std::string::npos
                                   ? " (at most " + std::to_string(std::numeric_limits<int64_t>::max()) + ")"
                                   : "");
        }
        if (v < lo) return "must be at least " + std::to_string(lo) + ", got " + text;
        if (v > hi) return "must be at most " + std::to_string(hi) + ", got " + text;
        return "";
      },
      lo == std::numeric_limits<int64_t>::min() ? "INT" : "INT>=" + std::to_string(lo), "integer");
}

CLI::Validator unsigned_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        errno = 0;
        char* end = nullptr;
        if (text.empty() || text[0] == '-') return "expected a non-negative integer, got '" + text + "'";
        std::strtoull(text.c_str(), &end, 10);
        if (end != text.c_str() + text.size()) return "expected a non-negative integer, got '" + text + "'";
        if (errno == ERANGE) return "integer '" + text + "' is out of range (at most 18446744073709551615)";
        return "";
      },
      "UINT", "unsigned");
}

// A finite number in [lo, hi] (open at lo when lo_open): NaN and infinities never pass.
CLI::Validator number_in(double lo, double hi, bool lo_open = false, const std::string& hint = "") {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size()) return "expected a number, got '" + text + "'";
        if (!std::isfinite(v) || errno == ERANGE) return "must be a finite number, got " + text + hint;
        auto bound = [](double b) {
          char buf[32];
          std::snprintf(buf, sizeof buf, "%g", b);
          return std::string(buf);
        };
        const bool lo_inf = lo == -std::numeric_limits<double>::max(),
                   hi_inf = hi == std::numeric_limits<double>::max();
        if (lo_open ? !(v > lo) : !(v >= lo)) {
          if (hi_inf)
            return std::string("must be ") + (lo_open ? "greater than " : "at least ") + bound(lo) + ", got " + text +
                   hint;
          return "must be in " + std::string(lo_open ? "(" : "[") + bound(lo) + ", " + bound(hi) + "], got " + text +
                 hint;
        }
        if (v > hi)
          return (lo_inf ? "must be at most " + bound(hi) : "must be in [" + bound(lo) + ", " + bound(hi) + "]") +
                 ", got " + text + hint;
        return "";
      },
      "NUMBER", "number");
}
constexpr double kMax = std::numeric_limits<double>::max();

// The job file's items, from toml++ (CLI11's own reader accepts malformed TOML).
class JobFileReader : public CLI::Config {
 public:
  explicit JobFileReader(std::string path) : path_(std::move(path)) {}
  std::string to_config(const CLI::App*, bool, bool, std::string) const override { return ""; }
  std::vector<CLI::ConfigItem> from_config(std::istream& in) const override {
    const std::string text(std::istreambuf_iterator<char>(in), {});
    std::vector<CLI::ConfigItem> out;
    for (const JobItem& j : parse_job_toml(text, path_)) {
      CLI::ConfigItem item;
      item.name = j.key;
      item.inputs = j.values;
      out.push_back(std::move(item));
    }
    return out;
  }

 private:
  std::string path_;
};

// Every field's TOML line, in registration order (filled by add_train_options through opt/flag).
using TomlLines = std::vector<std::pair<std::string, std::function<std::string()>>>;

// Every numeric option gets its type's check (integers exactly, numbers finite); a field's own
// range check is added with ->check() and replaces nothing.
// `check`, when given, replaces the type's check (and must include it); a repeated scalar option
// takes its last value (a job's command line can override what an alias or a script set before).
template <typename T>
CLI::Option* opt(CLI::App& app, const std::string& group, const std::string& key, T& field, const std::string& help,
                 TomlLines* lines, std::optional<CLI::Validator> check = std::nullopt) {
  if (lines) lines->emplace_back(key, [&field] { return toml_value(field); });
  CLI::Option* o = app.add_option(names(key), field, help)->group(group)->capture_default_str();
  if (check)
    o->check(*check);
  else if constexpr (std::is_same_v<T, int64_t>)
    o->check(integer_in(std::numeric_limits<int64_t>::min()));
  else if constexpr (std::is_same_v<T, uint64_t>)
    o->check(unsigned_integer());
  else if constexpr (std::is_same_v<T, double> || std::is_same_v<T, std::vector<double>>)
    o->check(number_in(-kMax, kMax));
  if constexpr (std::is_same_v<T, std::vector<double>> || std::is_same_v<T, std::vector<int64_t>>)
    o->delimiter(',');  // (numbers: "--phema-sigma-rel 0.05,0.1" as well as "0.05 0.1"; strings may hold commas)
  if constexpr (!std::is_same_v<T, std::vector<std::string>> && !std::is_same_v<T, std::vector<double>>)
    o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  return o;
}

// A choice: the enum's name table gives the accepted names (an error lists them), the names in
// --help, and the TOML value written back.
template <typename E>
CLI::Option* choice(CLI::App& app, const std::string& group, const std::string& key, E& field, const std::string& help,
                    TomlLines* lines) {
  const NameTable<E>& table = name_table(E{});
  if (lines) lines->emplace_back(key, [&field] { return toml_value(std::string(name_of(field))); });
  const std::string names_text = table.joined();  // (--help shows them in the type too: ENUM:{...})
  CLI::Option* o = app.add_option(names(key), field, help.empty() ? names_text : help)->group(group);
  o->transform(CLI::Validator(
      [&table](std::string& text) -> std::string {
        const auto v = table.find(text);
        if (!v) return "expected one of " + table.joined(", ") + "; got '" + text + "'";
        text = std::to_string(static_cast<int>(*v));  // (CLI11 reads an enum as its underlying integer)
        return "";
      },
      "{" + table.joined(",") + "}", "choice"));
  o->default_str(name_of(field));
  o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  return o;
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
  const CLI::Validator positive = integer_in(1), non_negative = integer_in(0);
  const CLI::Validator probability = number_in(0.0, 1.0);

  const std::string run = "Run";
  opt(app, run, "name", c.name, "run name; the run directory defaults to runs/<name>", lines);
  opt(app, run, "run_dir", c.run_dir, "run directory: metrics.jsonl, config.toml, ckpt/, samples/", lines);
  opt(app, run, "steps", c.steps, "optimizer steps to train for (the total, counting resumed ones)", lines, positive);
  opt(app, run, "seed", c.seed, "seed of every random draw (initialisation, data order, noise, dropout)", lines);
  opt(app, run, "log_every", c.log_every, "steps between metrics records and progress lines", lines, positive);
  opt(app, run, "eval_every", c.eval_every, "steps between held-out evaluations (0: at the end only)", lines,
      non_negative);
  opt(app, run, "align_every", c.align_every,
      "steps between alignment scores (TIFA-style questions answered on samples of held-out prompts; docs/EVAL.md), "
      "and at "
      "step 0 and the end; -1: auto (eval_every's steps when the data is the synthetic shapes world, else off); 0: off",
      lines, integer_in(-1));
  opt(app, run, "eval_steps", c.eval_steps,
      "further steps at which the held-out loss and the alignment score run, besides eval_every's and align_every's "
      "(a study's geometric schedule: dtstudy)",
      lines, positive);
  opt(app, run, "align_prompts", c.align_prompts,
      "held-out prompts each alignment score samples (the first N of eval_prompts.json; all it holds when fewer, as "
      "the record's alignment_prompts says)",
      lines, integer_in(1));
  opt(app, run, "ckpt_every", c.ckpt_every, "steps between checkpoints (0: at the end and on preemption only)", lines,
      non_negative);
  opt(app, run, "keep_ckpts", c.keep_ckpts, "complete checkpoints to keep (the oldest are deleted)", lines, positive);
  opt(app, run, "sample_every", c.sample_every, "steps between sample grids (0: at the end only)", lines, non_negative);
  opt(app, run, "resume", c.resume, "auto (newest complete checkpoint of the run, if any), none, or a checkpoint path",
      lines);
  flag(app, run, "dry_run", c.dry_run, "build everything, print the plan, do not train", lines);
  choice(app, run, "device", c.device,
         "where each rank computes (auto: GPU <node-local rank> where LibTorch sees GPUs, else the CPU)", lines);
  opt(app, run, "threads", c.threads, "compute threads per rank (0: cores on this node / ranks on it)", lines,
      non_negative);
  opt(app, run, "max_bad_steps", c.max_bad_steps,
      "abort after this many consecutive steps with a non-finite loss or gradient", lines, positive);
  opt(app, run, "watchdog_timeout", c.watchdog_timeout,
      "seconds any phase of the loop (data, step, eval, sample, checkpoint) may run before the watchdog ends the job, "
      "naming the ranks that did not arrive (0: no watchdog)",
      lines, number_in(0.0, kMax));
  opt(app, run, "watchdog_factor", c.watchdog_factor,
      "...and a phase running longer than this many times its recent median (and watchdog_min) ends it too (0: the "
      "timeout only)",
      lines, number_in(0.0, kMax));
  opt(app, run, "watchdog_min", c.watchdog_min, "seconds below which the relative bound never fires", lines,
      number_in(0.0, kMax));
  flag(app, run, "ignore_memory_check", c.ignore_memory_check,
       "start even when the plan's memory per rank exceeds what this node has available (the check runs at start-up)",
       lines);
  opt(app, run, "peak_tflops", c.peak_tflops,
      "peak TFLOP/s per rank for MFU (0: measure a matmul at start-up: fp32 on the CPU, the compute dtype on a GPU)",
      lines, number_in(0.0, kMax));

  const std::string model = "Model";
  opt(app, model, "model", c.model, "backbone preset (dtmodel list)", lines);
  opt(app, model, "model_set", c.model_set, "preset field overrides, key=value (dtmodel describe lists the keys)",
      lines);
  choice(app, model, "sharding", c.sharding, "", lines);
  flag(app, model, "activation_checkpointing", c.activation_checkpointing,
       "recompute every block in backward: ~10x less activation memory, one more forward (zero3 gathers each "
       "block again for it)",
       lines);
  choice(app, model, "compute_dtype", c.compute_dtype,
         "what the model computes in (bf16: a compute copy of fp32 master weights)", lines);
  flag(app, model, "channels_last", c.channels_last,
       "NHWC activations: the UNet's convolutions run channels-last (on a GPU in bf16 usually faster; "
       "dtbench train --channels-last measures it)",
       lines);
  opt(app, model, "init_weights", c.init_weights,
      "safetensors weights (dtckpt export) to start from instead of a random initialisation; names and shapes must "
      "match "
      "the model; a checkpoint being resumed takes precedence (a stage from another run: init_from)",
      lines);

  const std::string stages = "Stages ([S2]: low-resolution pre-training, then high-resolution fine-tuning)";
  opt(app, stages, "init_from", c.init_from,
      "start from another run's weights: RUN_DIR (its newest complete checkpoint), a checkpoint RUN/ckpt/step_N or "
      "a weights file (dtckpt export); the optimizer state starts fresh and the weight averages start at the loaded "
      "weights; a resolution change is adapted as the options below say (docs/TRAINING.md \"Stages\")",
      lines);
  choice(app, stages, "init_from_weights", c.init_from_weights,
         "which weights of an init_from checkpoint: auto (its first weight average, else the trained ones), params, "
         "ema",
         lines);
  choice(app, stages, "pos_embed_transfer", c.pos_embed_transfer,
         "a transformer's positional embeddings when the latent grid changes: resample ([S2]'s mmDiT++: the sin-cos "
         "grid keeps its extent), interpolate (the base grid's table interpolated), extrapolate (new positions past "
         "the trained ones), none (refuse a change); auto: resample for mmdit_pp, interpolate for the other "
         "transformers, as [S2] compares them",
         lines);
  opt(app, stages, "noise_schedule_scale", c.noise_schedule_scale,
      "[S2] Eq. 3: train and sample with the schedule rescaled for resolution scale S (SNR / S^2): auto (the stage's "
      "S = the source's scale x this run's latent side / the source's; 1 without init_from), or a number (1: off)",
      lines);
  flag(app, stages, "guidance_transfer", c.guidance_transfer,
       "[S2] Eq. 4: sample with guidance 1 + S (guidance_scale - 1), guidance_scale being the scale tuned at the "
       "base resolution",
       lines);
  opt(app, stages, "init_from_size", c.init_from_size,
      "the init_from source's latent side (0: read from the source; the trainer records it)", lines, non_negative);
  opt(app, stages, "init_from_scale", c.init_from_scale,
      "the init_from source's own resolution scale S (0: read from the source; the trainer records it)", lines,
      number_in(0.0, kMax));

  const std::string data = "Data";
  opt(app, data, "data", c.data, "shard directories, or synthetic:shapes (generated once in <run_dir>/data)", lines);
  opt(app, data, "data_weights", c.data_weights, "mixing weights of the data directories (default: equal)", lines,
      number_in(0.0, kMax, true));
  opt(app, data, "eval_data", c.eval_data, "held-out shard directories (synthetic data gets a held-out set of its own)",
      lines);
  opt(app, data, "synthetic_images", c.synthetic_images, "images in the synthetic dataset", lines, positive);
  opt(app, data, "synthetic_image_size", c.synthetic_image_size,
      "pixels per side of the synthetic images (a multiple of 8)", lines, integer_in(8, 512));
  opt(app, data, "global_batch", c.global_batch, "samples per optimizer step, over all ranks", lines, positive);
  opt(app, data, "micro_batch", c.micro_batch,
      "samples per rank per forward (0: global_batch / ranks); accumulation = global / (ranks x micro)", lines,
      non_negative);
  opt(app, data, "workers", c.workers, "loader threads per rank", lines, positive);
  opt(app, data, "prefetch", c.prefetch, "batches prepared ahead per rank", lines, non_negative);
  opt(app, data, "p_synthetic_caption", c.p_synthetic_caption, "[S1] probability of a synthetic caption", lines,
      probability);
  opt(app, data, "synthetic_top_k", c.synthetic_top_k, "[S1] synthetic caption chosen among the top k", lines,
      positive);
  flag(app, data, "skip_bad_samples", c.skip_bad_samples,
       "drop (and count: skipped_samples in metrics.jsonl) samples with unreadable or non-finite data instead of "
       "failing",
       lines);
  flag(app, data, "random_flip", c.random_flip, "horizontal flips (p = 0.5), flagged in the controls", lines);
  opt(app, data, "crop_scale", c.crop_scale,
      "[S2] crop-scale pre-training: square crops of LO,HI of the image side (global 0.9,1; local 0.4,0.6; mixed "
      "0.4,1), resized to crop_size, their offsets in the controls; pixel-space data (latents are cropped when "
      "encoded)",
      lines, number_in(0.0, 1.0, true));
  opt(app, data, "crop_size", c.crop_size, "the side crops are resized to: the model's input (0: the stored side)",
      lines, non_negative);
  choice(app, data, "text_padding", c.text_padding, "", lines);
  opt(app, data, "text_noise_beta", c.text_noise_beta,
      "noisy_replicate: [S2]'s beta_txt, the variance of the Gaussian noise on the copies (scaled by sqrt(m - 1) x "
      "the prompt's per-channel std)",
      lines, number_in(0.0, kMax));
  opt(app, data, "max_tokens", c.max_tokens, "text tokens T the model attends to", lines, positive);

  const std::string optim = "Optimizer";
  opt(app, optim, "lr", c.lr, "peak learning rate", lines, number_in(0.0, kMax, /*lo_open=*/true));
  opt(app, optim, "beta1", c.beta1, "AdamW beta1", lines, number_in(0.0, 0.999999));
  opt(app, optim, "beta2", c.beta2, "AdamW beta2", lines, number_in(0.0, 0.999999));
  opt(app, optim, "eps", c.eps, "AdamW epsilon", lines, number_in(0.0, kMax, true));
  opt(app, optim, "weight_decay", c.weight_decay, "AdamW decoupled weight decay", lines, number_in(0.0, kMax));
  opt(app, optim, "warmup_steps", c.warmup_steps, "linear warm-up steps", lines, non_negative);
  choice(app, optim, "lr_schedule", c.lr_schedule, "after warm-up", lines);
  opt(app, optim, "min_lr_ratio", c.min_lr_ratio, "cosine ends at lr x this", lines, probability);
  opt(app, optim, "max_grad_norm", c.max_grad_norm, "global gradient-norm clipping (<= 0: off)", lines,
      number_in(-kMax, kMax, false, " (0 turns clipping off)"));
  choice(app, optim, "ema", c.ema,
         "weight averaging: exponential (ema_decay), phema (EDM2's power-function profiles, reconstructed for any "
         "sigma_rel after the run: dtckpt phema) or none; samples and evaluations use the first average kept",
         lines);
  opt(app, optim, "ema_decay", c.ema_decay, "ema = exponential: the EMA's decay (0: no EMA)", lines,
      number_in(0.0, 0.999999999));
  opt(app, optim, "phema_sigma_rel", c.phema_sigma_rel,
      "ema = phema: the profiles tracked, as widths relative to the training time (each in (0, 0.2887); EDM2: 0.05, "
      "0.10)",
      lines);
  opt(app, optim, "phema_snapshot_images", c.phema_snapshot_images,
      "ema = phema: images between snapshots of the profiles (a multiple of global_batch; 0: about 32 per run; EDM2: "
      "8388608)",
      lines, non_negative);
  choice(app, optim, "phema_snapshot_dtype", c.phema_snapshot_dtype,
         "ema = phema: how snapshots are stored (the training state stays fp32)", lines);

  const std::string diff = "Diffusion";
  choice(app, diff, "target", c.target, "what the model predicts", lines);
  choice(app, diff, "loss_weighting", c.loss_weighting, "the loss weight over timesteps", lines);
  choice(app, diff, "timestep_sampling", c.timestep_sampling, "", lines);
  choice(app, diff, "beta_schedule", c.beta_schedule, "", lines);
  opt(app, diff, "num_timesteps", c.num_timesteps, "diffusion steps T", lines, integer_in(2, 100000));
  flag(app, diff, "zero_terminal_snr", c.zero_terminal_snr,
       "rescale the schedule to zero terminal SNR (needs target = v)", lines);
  opt(app, diff, "p_drop_text", c.p_drop_text, "classifier-free-guidance text dropout", lines, probability);
  opt(app, diff, "p_drop_control", c.p_drop_control, "[S2] control-condition dropout", lines, probability);
  flag(app, diff, "control_conditioning", c.control_conditioning,
       "[S2] control embedding (crop, flip, size) added to the time embedding", lines);

  const std::string samples = "Samples";
  opt(app, samples, "sample_count", c.sample_count, "prompts sampled per grid", lines, non_negative);
  opt(app, samples, "vae", c.vae,
      "diffusers AutoencoderKL folder (the VAE the latents were encoded with): latent-space runs write "
      "samples/step_N.png decoded beside the latents (held-out images on top, samples below)",
      lines);
  opt(app, samples, "sample_steps", c.sample_steps, "DDIM / Euler steps", lines, positive);
  opt(app, samples, "guidance_scale", c.guidance_scale,
      "classifier-free guidance scale (with guidance_transfer: the scale at the base resolution)", lines,
      number_in(0.0, kMax));
  opt(app, samples, "control_guidance", c.control_guidance,
      "[S2] Eq. 2's beta: guidance on the control conditions of a model that has them (1: plain classifier-free "
      "guidance; [S2]'s best 1.375)",
      lines, number_in(0.0, kMax));
}

}  // namespace

namespace {

// A job file's keys against the options (the error names the key and FILE:LINE:COLUMN: CLI11 alone
// would only say it could not parse an item) and each value's TOML type against the option's.
void check_job_items(const CLI::App& app, const std::vector<JobItem>& items, const std::string& source) {
  // Each key's TOML type, from the defaults written out (an integer may stand for a float;
  // a list of one for a list: the rest is a type error, at its line).
  std::map<std::string, std::string> kinds;
  for (const JobItem& d : parse_job_toml(train_config_toml(TrainConfig{}), "defaults")) kinds[d.key] = d.kind;
  for (const char* list :
       {"model_set", "data_weights", "eval_data", "data", "eval_steps", "phema_sigma_rel", "crop_scale"})
    kinds[list] = "array";
  for (const JobItem& item : items) {
    const std::string where = source + ":" + std::to_string(item.line) + ":" + std::to_string(item.column);
    const CLI::Option* o = app.get_option_no_throw("--" + item.key);
    if (!o || item.key == "config")
      throw Error(where,
                  "unknown key '" + item.key + "' (dtrainer --help lists the options; TOML keys are snake_case)");
    const auto k = kinds.find(item.key);
    if (k == kinds.end() || k->second == item.kind || (k->second == "float" && item.kind == "integer")) continue;
    const bool quoted_number = item.kind == "string" && (k->second == "integer" || k->second == "float");
    auto a = [](const std::string& kind) {
      return kind == "array"     ? std::string("a list")
             : kind == "integer" ? std::string("an integer")
             : kind == "float"   ? std::string("a number")
                                 : "a " + kind;
    };
    throw Error(where, "key '" + item.key + "' wants " + a(k->second) + ", got " + a(item.kind) +
                           (quoted_number ? " (write the number without quotes)" : ""));
  }
}

}  // namespace

void parse_train_config(CLI::App& app, int argc, const char* const* argv) {
  std::string file;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" && i + 1 < argc)
      file = argv[i + 1];
    else if (a.rfind("--config=", 0) == 0)
      file = a.substr(9);
  }
  if (!file.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) throw Error(file, "no such config file");
    if (!std::filesystem::is_regular_file(file, ec))
      throw Error(file, "is not a file (--config takes a TOML job file, e.g. jobs/quickstart.toml)");
    check_job_items(app, read_job_file(file), file);
    app.config_formatter(std::make_shared<JobFileReader>(file));
  }
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.parse(argc, argv);
}

TrainConfig read_job_text(const std::string& text, const std::string& source) {
  TrainConfig c;
  CLI::App app;
  add_train_options(app, c);
  check_job_items(app, parse_job_toml(text, source), source);
  app.config_formatter(std::make_shared<JobFileReader>(source));
  app.allow_config_extras(CLI::config_extras_mode::error);
  std::istringstream in(text);
  try {
    app.parse_from_stream(in);
  } catch (const CLI::ParseError& e) {
    throw Error(source, e.what());
  }
  return c;
}

TrainConfig train_config_from_toml(const std::string& toml, const std::string& source) {
  TrainConfig c;
  CLI::App app;
  add_train_options(app, c);
  app.config_formatter(std::make_shared<JobFileReader>(source));
  app.allow_config_extras(CLI::config_extras_mode::ignore);  // (keys of a newer dtrainer: not this reader's concern)
  std::istringstream in(toml);
  try {
    app.parse_from_stream(in);
  } catch (const CLI::ParseError& e) {
    throw Error(source, std::string("the recorded configuration does not read back: ") + e.what());
  }
  return c;
}

void validate_train_config(const TrainConfig& c, int world) {
  if (c.name.empty() || c.name == "." || c.name == ".." || c.name.find('/') != std::string::npos)
    throw Error("name", "'" + c.name + "' is not a run name (one path component: runs/<name>; --run-dir takes a path)");
  if (c.global_batch % world != 0)
    throw Error("global_batch",
                std::to_string(c.global_batch) + " is not divisible by the " + std::to_string(world) + " ranks");
  const int64_t per_rank = c.global_batch / world;
  const int64_t micro = c.micro_batch ? c.micro_batch : per_rank;
  if (per_rank % micro != 0)
    throw Error("micro_batch", std::to_string(micro) + " does not divide the per-rank batch " +
                                   std::to_string(per_rank) + " (global_batch " + std::to_string(c.global_batch) +
                                   " / " + std::to_string(world) + " ranks)");
  if (c.data.empty()) throw Error("data", "no data directory given");
  if (!c.data_weights.empty() && c.data_weights.size() != c.data.size())
    throw Error("data_weights", std::to_string(c.data_weights.size()) + " weights for " +
                                    std::to_string(c.data.size()) + " data directories");
  for (const auto& d : c.data)
    if (d.rfind("synthetic:", 0) == 0 && d != "synthetic:shapes")
      throw Error("data", "unknown synthetic dataset '" + d + "' (synthetic:shapes exists)");
  if (c.zero_terminal_snr && c.target != diffusion::Target::kV) throw Error("zero_terminal_snr", "needs target = v");
  for (const int64_t s : c.eval_steps)
    if (s > c.steps)
      throw Error("eval_steps",
                  std::to_string(s) + " is beyond the last step (steps = " + std::to_string(c.steps) + ")");
  if (c.warmup_steps > c.steps)
    throw Error("warmup_steps", std::to_string(c.warmup_steps) + " exceeds steps " + std::to_string(c.steps));
  for (const auto& kv : c.model_set)
    if (kv.find('=') == std::string::npos) throw Error("model_set", "'" + kv + "' is not key=value");
  int64_t samples = 0;  // (the samples counter, and everything counted per sample, must not wrap)
  if (__builtin_mul_overflow(c.steps, c.global_batch, &samples))
    throw Error("steps", std::to_string(c.steps) + " steps x global_batch " + std::to_string(c.global_batch) +
                             " samples overflow a 64-bit counter");
  validate_weight_averaging(c);
  if (!c.init_from.empty() && !c.init_weights.empty())
    throw Error("init_from",
                "and init_weights both name initial weights: keep one (init_from takes a weights file too)");
  noise_schedule_scale_value(c, 1.0);  // (auto or a positive number)
  if (!c.crop_scale.empty() && (c.crop_scale.size() != 2 || c.crop_scale[0] > c.crop_scale[1]))
    throw Error("crop_scale", "takes two fractions of the image side, LO <= HI (e.g. 0.4,0.6), got " +
                                  std::to_string(c.crop_scale.size()) + " values");
  if (c.crop_size > 0 && c.crop_scale.empty())
    throw Error("crop_size", "sizes the crops of crop_scale, which is not set");

  if (c.watchdog_timeout > 0 && c.watchdog_min > c.watchdog_timeout)
    throw Error("watchdog_min", "exceeds watchdog_timeout (" + std::to_string(c.watchdog_min) + " > " +
                                    std::to_string(c.watchdog_timeout) + ")");
}

}  // namespace dtrainer::train
