#include "dtrainer/train/evaluation.h"

#include <algorithm>
#include <cstdio>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/log.h"
#include "dtrainer/core/remove_tree.h"
#include "dtrainer/core/step_name.h"
#include "dtrainer/diffusion/sampler.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/train/ema_weights.h"
#include "dtrainer/train/image_grid.h"
#include "dtrainer/train/component_configs.h"
#include "dtrainer/train/stage_transfer.h"
#include "dtrainer/train/train_config.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

std::unique_ptr<AlignmentHook> AlignmentHook::make(const TrainConfig& c, const DataPlan& data,
                                                   const fs::path& run_dir) {
  if (c.align_every == 0) return nullptr;
  const bool asked = c.align_every > 0;
  if (!data.shapes_world) {
    if (!asked) return nullptr;
    throw Error("align_every",
                data.pixels
                    ? "the alignment score answers questions about the synthetic shapes world; this data is not it "
                      "(set align_every = 0)"
                    : "the alignment score reads pixels, and this run's latents are not the shapes world's as "
                      "dtdata encode makes them (encode.json and eval_prompts.json in the data; docs/EVAL.md) "
                      "(set align_every = 0)");
  }
  const bool synthetic = c.data.size() == 1 && c.data[0] == "synthetic:shapes";
  if (!synthetic) {  // (given data: its prompts must be there now, not at the first evaluation)
    try {
      find_eval_prompts(data.eval_dirs, data.train_dirs);
    } catch (const Error& e) {
      if (!asked) return nullptr;
      throw Error("align_every", e.detail());
    }
  }
  std::unique_ptr<AlignmentHook> h(new AlignmentHook());
  h->every_ = asked ? c.align_every : (c.eval_every > 0 ? c.eval_every : 0);
  h->steps_ = c.eval_steps;
  h->root_ = run_dir / "alignment";
  h->image_shape_ = {data.inputs.latent_channels, data.inputs.latent_size, data.inputs.latent_size};
  // (synthetic data is written at start-up: the prompts are read on the first evaluation)
  h->options_.prompts = c.align_prompts;
  h->options_.seed = c.seed;
  h->options_.bootstrap = 1000;
  h->data_ = data;
  h->vae_ = c.vae;
  return h;
}

bool AlignmentHook::due(int64_t step, int64_t last_step) const {
  return step == 0 || step == last_step || (every_ > 0 && step % every_ == 0) ||
         std::find(steps_.begin(), steps_.end(), step) != steps_.end();
}

bool Evaluation::held_out_due(int64_t step, int64_t last_step) const {
  return step >= last_step || (c_.eval_every > 0 && step % c_.eval_every == 0) ||
         std::find(c_.eval_steps.begin(), c_.eval_steps.end(), step) != c_.eval_steps.end();
}

nlohmann::json AlignmentHook::evaluate(int64_t step, const SamplerSetup& sampler,
                                       const diffusion::TextPaddingConfig& padding, MPI_Comm comm) const {
  if (prompts_.prompts.empty()) {
    parallel::agree(comm, [&] {
      if (!data_.pixels) latent_ = load_latent_alignment(data_.train_dirs, vae_);
      prompts_ = load_alignment_prompts(find_eval_prompts(data_.eval_dirs, data_.train_dirs), data_.inputs.text_dim,
                                        data_.caption_tokens, options_.prompts,
                                        /*exactly=*/false,  // (the record says how many)
                                        latent_ ? latent_->encode_prompts : nullptr);
    });
  }
  const fs::path dir = root_ / step_name(step);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  parallel::agree(comm, [&] {
    if (rank == 0) {
      fs::create_directories(root_);
      remove_tree(dir);  // (an interrupted run's: this run recomputes it, alike)
    }
  });
  const nlohmann::json manifest = {
      {"step", step},          {"guidance", sampler.guidance},       {"steps", sampler.steps},
      {"seed", options_.seed}, {"prompts", prompts_.prompts.size()}, {"prompts_file", prompts_.source},
      {"images_per_prompt", 1}};
  const AlignmentRun r = evaluate_alignment(prompts_, sampler, padding, image_shape_, options_, dir, manifest, comm,
                                            latent_ ? latent_->to_pixels : nullptr);
  nlohmann::json by = nlohmann::json::object();
  for (const auto& [c, v] : r.score.by_category) by[eval::to_string(c)] = v.mean;
  return {{"alignment", r.score.overall.mean},
          {"alignment_interval", {r.score.overall.lo, r.score.overall.hi}},
          {"alignment_chance", r.score.overall.chance},
          {"alignment_by_category", by},
          {"alignment_prompts", r.score.overall.prompts},
          {"alignment_dir", dir.string()}};
}

// ---- Evaluation ------------------------------------------------------------------------------

Evaluation::Evaluation(const TrainConfig& c, const DataPlan& data, const fs::path& run_dir,
                       std::unique_ptr<AlignmentHook> align, MPI_Comm comm)
    : c_(c), data_(data), run_(run_dir), align_(std::move(align)), comm_(comm) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &world_);
}

void Evaluation::load(const data::LoaderConfig& train_loader, const models::BackboneInputs& inputs) {
  if (data_.eval_dirs.empty()) {
    log_warn("no eval_data: held-out loss and sample prompts are off (set eval_data to held-out shards)");
    return;
  }
  data::LoaderConfig ec = train_loader;
  ec.dirs = data_.eval_dirs;
  ec.weights.clear();
  ec.p_synthetic_caption = 0;
  ec.random_flip = false;
  ec.prefetch = 0;
  ec.workers = 1;
  ec.skip_bad_samples = false;
  data::Loader probe(ec);  // (global_batch below needs the set's size)
  check_data_fits(probe, inputs, ec.dirs, "eval_data");
  int64_t n = 0;
  for (size_t i = 0; i < ec.dirs.size(); ++i) n += probe.dataset_size(static_cast<int64_t>(i));
  ec.global_batch = std::max<int64_t>(world_, std::min<int64_t>(64, n) / world_ * world_);
  eval_batch_ = data::Loader(ec).load_batch(0);
  ec.rank = 0;
  ec.world = 1;
  ec.global_batch = std::max<int64_t>(1, std::min<int64_t>(c_.sample_count, n));
  prompts_ = data::Loader(ec).load_batch(0);
  held_out_ = true;
  if (!c_.vae.empty() && rank_ == 0 && c_.sample_count > 0) vae_ = models::load_autoencoder(c_.vae);
}

nlohmann::json Evaluation::held_out_loss(const EvalModel& m, int64_t /*step*/) const {
  torch::NoGradGuard no_grad;
  const std::vector<double> grid = {0.1, 0.3, 0.5, 0.7, 0.9};
  std::vector<double> sums;
  const int64_t n = eval_batch_.latents.size(0);
  const torch::Tensor text = to_device(eval_batch_.text, m.device),
                      mask = attention_mask(eval_batch_.text_mask, m.device);
  for (double t : grid) {
    const diffusion::NoisedBatch nb =
        to_device(m.objective->make_eval_batch(eval_batch_.latents, eval_batch_.sample_ids, t), m.device);
    const torch::Tensor pred = forward_backbone(*m.model, m.channels_last, nb.x_t, nb.t_model, text, mask, nullptr);
    sums.push_back(m.objective->loss(pred, nb).item<double>() * static_cast<double>(n));
  }
  sums.push_back(static_cast<double>(n));
  sums = parallel::all_reduce_host(comm_, sums, parallel::HostOp::kSum);
  nlohmann::json by_t = nlohmann::json::object();
  double mean = 0;
  for (size_t i = 0; i < grid.size(); ++i) {
    const double l = sums[i] / sums.back();
    char key[16];
    std::snprintf(key, sizeof key, "%.1f", grid[i]);
    by_t[key] = l;
    mean += l / static_cast<double>(grid.size());
  }
  return {{"eval", true}, {"eval_loss", mean}, {"eval_loss_by_t", by_t}, {"eval_samples", sums.back()}};
}

SamplerSetup Evaluation::sampler(const EvalModel& m) const {
  SamplerSetup setup = sampler_setup(c_, data_);
  setup.model = m.model;
  setup.objective = m.objective;
  setup.device = m.device;
  setup.channels_last = m.channels_last;
  return setup;
}

void Evaluation::sample_grid(const EvalModel& m, int64_t step) const {
  if (!held_out_ || c_.sample_count == 0) return;
  const int64_t n = prompts_.latents.size(0);
  const auto shape = prompts_.latents.sizes().vec();
  std::vector<torch::Tensor> starts;
  for (int64_t i = 0; i < n; ++i)
    starts.push_back(diffusion::initial_noise(at::IntArrayRef(shape).slice(1), c_.seed, i));
  torch::Tensor images;
  {
    EmaWeights ema(*m.params, !m.params->average_names().empty());
    images = sample_images(sampler(m), torch::stack(starts), prompts_.text, prompts_.text_mask);
    ema.restore();
  }
  if (rank_ != 0) return;
  fs::create_directories(run_ / "samples");
  const std::string name = step_name(step);
  if (data_.pixels && shape[1] == 3) {
    // Top row: the prompts' held-out images; bottom row: samples for their captions.
    const std::string path = (run_ / "samples" / (name + ".png")).string();
    write_png_grid(path, torch::cat({prompts_.latents, images}), n);
    log_info("samples " + path + " (top: held-out images, bottom: samples for their captions)");
  } else {
    const std::string path = (run_ / "samples" / (name + ".pt")).string();
    const fs::path tmp = temporary_path(path);
    try {
      torch::save(images, tmp.string());
    } catch (const std::exception& e) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error(path, std::string("cannot write the sample latents: ") + e.what());
    }
    publish_file(tmp, path);
    log_info("sample latents " + path);
    if (vae_) {  // (decoded a few at a time: a 1024 px decode holds gigabytes of activations)
      torch::NoGradGuard no_grad;
      const torch::Tensor all = torch::cat({prompts_.latents, images}).to(torch::kFloat32);
      std::vector<torch::Tensor> decoded;
      for (int64_t i = 0; i < all.size(0); i += 4)
        decoded.push_back(vae_->decode(all.narrow(0, i, std::min<int64_t>(4, all.size(0) - i))).to(torch::kFloat32));
      const std::string png = (run_ / "samples" / (name + ".png")).string();
      write_png_grid(png, torch::cat(decoded).clamp(-1, 1), n);
      log_info("samples " + png + " (decoded by the VAE; top: held-out images, bottom: samples for their captions)");
    }
  }
}

nlohmann::json Evaluation::alignment(const EvalModel& m, int64_t step) const {
  const diffusion::TextPaddingConfig padding = text_padding_config(c_);
  EmaWeights ema(*m.params, !m.params->average_names().empty());
  nlohmann::json record = align_->evaluate(step, sampler(m), padding, comm_);
  ema.restore();
  return record;
}

std::string Evaluation::describe_held_out(const nlohmann::json& r) {
  return "eval step " + std::to_string(r["step"].get<int64_t>()) + ": held-out loss " +
         std::to_string(r["eval_loss"].get<double>());
}

std::string Evaluation::describe_alignment(const nlohmann::json& r) {
  char line[160];
  std::snprintf(line, sizeof line, "alignment step %lld: %.3f [%.3f, %.3f] (chance %.3f; %lld prompts) ",
                static_cast<long long>(r["step"].get<int64_t>()), r["alignment"].get<double>(),
                r["alignment_interval"][0].get<double>(), r["alignment_interval"][1].get<double>(),
                r["alignment_chance"].get<double>(), static_cast<long long>(r["alignment_prompts"].get<int64_t>()));
  return line + r["alignment_dir"].get<std::string>();
}

Evaluation::Missing Evaluation::missing_at(const RunDirectory& dir, int64_t step, int64_t last_step) const {
  const bool last = step >= last_step;
  const bool eval_due = held_out_due(step, last_step);
  const bool sample_due = last || (c_.sample_every > 0 && step % c_.sample_every == 0);
  const fs::path samples = run_ / "samples" / step_name(step);
  std::error_code ec;
  std::vector<int64_t> missing = {
      eval_due && !dir.has_record(step, "eval") ? 1 : 0,
      sample_due && !fs::exists(samples.string() + ".png", ec) && !fs::exists(samples.string() + ".pt", ec) ? 1 : 0,
      alignment_due(step, last_step) && !dir.has_record(step, "alignment") ? 1 : 0};
  parallel::broadcast_host(comm_, missing);  // (rank 0 read the run directory: every rank evaluates alike)
  return {missing[0] != 0, missing[1] != 0, missing[2] != 0};
}

}  // namespace dtrainer::train
