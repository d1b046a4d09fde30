#include "dtrainer/train/trainer.h"

#include <dlfcn.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/log.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/data/synthesize.h"
#include "dtrainer/data/toy_text_encoder.h"
#include "dtrainer/data/validate.h"
#include "dtrainer/diffusion/guidance.h"
#include "dtrainer/diffusion/objective.h"
#include "dtrainer/diffusion/sampler.h"
#include "dtrainer/diffusion/schedule.h"
#include "dtrainer/dist/device_stats.h"
#include "dtrainer/dist/local_device.h"
#include "dtrainer/dist/mpi_runtime.h"
#include "dtrainer/dist/sharded_params.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/models/parameter_layout.h"
#include "dtrainer/train/image_grid.h"
#include "dtrainer/train/lr_schedule.h"
#include "dtrainer/train/preemption.h"
#include "dtrainer/train/throughput_bench.h"
#include "dtrainer/train/train_config.h"
#include "dtrainer/train/memory_plan.h"
#include "dtrainer/train/resume_plan.h"
#include "dtrainer/train/run_directory.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/sampling.h"
#include "dtrainer/train/evaluation.h"
#include "dtrainer/dist/agreement.h"
#include "dtrainer/dist/watchdog.h"
#include "dtrainer/core/memory_info.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/parse.h"
#include "dtrainer/core/remove_tree.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace dtrainer::train {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

constexpr int64_t kSyntheticEvalImages = 256;

// ---- Threads ---------------------------------------------------------------------------------

// OpenBLAS sizes its own pool (at::set_num_threads does not reach it); it is found at run time
// so that a system whose BLAS is not OpenBLAS still works.
void set_compute_threads(int64_t threads) {
  at::set_num_threads(static_cast<int>(threads));
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(static_cast<int>(threads));
}

// ---- Device --------------------------------------------------------------------------------

// A host tensor on the compute device. To a GPU through pinned memory, without waiting: the copy
// is queued behind the work already on the current stream.
torch::Tensor to_device(const torch::Tensor& t, const torch::Device& device) {
  if (!t.defined() || t.device() == device) return t;
  if (device.is_cuda() && t.is_cpu()) return t.pin_memory().to(device, /*non_blocking=*/true);
  return t.to(device);
}

// The parts of a noised batch the model and the loss read on the device (x_t, t_model; target,
// weight); the rest (t_unit, snr, the dropout flags) is used on the host and stays there.
diffusion::NoisedBatch to_device(diffusion::NoisedBatch b, const torch::Device& device) {
  for (torch::Tensor* t : {&b.x_t, &b.target, &b.weight, &b.t_model}) *t = to_device(*t, device);
  return b;
}

// ---- Scalar reductions (raw MPI: a few doubles) ---------------------------------------------

std::vector<double> all_reduce(std::vector<double> v, MPI_Op op) {
  dist::note_collective();
  MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, op, MPI_COMM_WORLD);
  return v;
}

// ---- Data (the plan: train/data_plan.h) ----------------------------------------------------

void synthesize_on_rank0(const TrainConfig& c, const DataPlan& p, int rank);

// Rank 0 writes the synthetic datasets once (a later run reuses them); the others wait.
void synthesize_if_needed(const TrainConfig& c, const DataPlan& p, int rank) {
  bool synthetic = false;
  for (const auto& d : c.data) synthetic |= d == "synthetic:shapes";
  if (!synthetic) return;
  dist::agree(MPI_COMM_WORLD, [&] { synthesize_on_rank0(c, p, rank); });
}

void synthesize_on_rank0(const TrainConfig& c, const DataPlan& p, int rank) {
  if (rank == 0) {
    auto make = [&](const std::string& dir, int64_t images, uint64_t seed) {
      if (fs::exists(fs::path(dir) / "eval_prompts.json")) return;  // written last: the set is whole
      data::SynthConfig s;
      s.kind = "shapes";
      s.out_dir = dir;
      s.images = images;
      s.images_per_shard = std::min<int64_t>(images, 2048);
      s.seed = seed;
      s.image_size = c.synthetic_image_size;
      s.text_dim = kSyntheticTextDim;
      s.force = true;
      log_info("synthesizing " + std::to_string(images) + " shapes images into " + dir);
      data::synthesize(s);
    };
    make(p.train_dirs.front(), c.synthetic_images, c.seed);
    if (c.eval_data.empty()) make(p.eval_dirs.front(), kSyntheticEvalImages, c.seed + 1000003);
  }
}

// ---- Plan (dry run and start-up) -------------------------------------------------------------

struct Plan {
  models::BackboneSpec backbone;
  models::BackboneCost cost;
  int64_t world = 1, per_rank = 0, micro = 0, accumulation = 1;
  int64_t train_flops_per_sample = 0;  // 3 x forward FLOPs, all MACs (for TFLOP/s and MFU)
  double gflops_per_sample_s1 = 0;     // [S1]: 3 x 2 x linear/conv MACs, in GFLOPs (compute C)
};

Plan make_plan(const TrainConfig& c, const DataPlan& d, int world) {
  Plan p;
  const models::BackboneInputs inputs = d.found ? d.inputs : models::preset_inputs(c.model);
  p.backbone = models::resolve_backbone(c.model, c.model_set, inputs, c.control_conditioning);
  p.cost = models::backbone_cost(p.backbone);
  p.world = world;
  p.per_rank = c.global_batch / world;
  p.micro = c.micro_batch ? c.micro_batch : p.per_rank;
  p.accumulation = p.per_rank / p.micro;
  p.train_flops_per_sample = p.cost.training_flops();
  p.gflops_per_sample_s1 = 3.0 * 2.0 * static_cast<double>(p.cost.macs_linear_conv) / 1e9;
  return p;
}

std::string describe_plan(const TrainConfig& c, const DataPlan& d, const Plan& p, const std::string& device) {
  const double N = static_cast<double>(p.cost.params);
  const bool bf16 = c.compute_dtype == "bf16";
  const bool ckpt = c.activation_checkpointing || c.sharding == "zero3";
  const MemoryEstimate mem = estimate_memory(c, p.cost, p.world, p.micro);
  std::ostringstream o;
  o << "dtrainer plan\n"
    << "  model        " << models::backbone_summary(p.backbone) << "\n"
    << "  parameters   " << p.cost.params << " (" << N / 1e6 << " M)\n"
    << "  data         ";
  for (const auto& dir : d.train_dirs) o << dir << " ";
  o << (d.found ? "" : "(not found: shapes taken from the preset)") << "\n"
    << "  device       " << device << "\n"
    << "  batch        global " << c.global_batch << " = " << p.world << " ranks x micro-batch " << p.micro
    << " x accumulation " << p.accumulation << "\n"
    << "  sharding     " << c.sharding << (ckpt ? " + activation checkpointing" : "") << ", compute in " << c.compute_dtype
    << (bf16 ? " (fp32 masters)" : "") << (c.channels_last ? ", channels-last activations" : "") << "\n"
    << "  memory/rank  " << mem.describe() << "\n"
    << "  FLOPs/step   " << static_cast<double>(p.train_flops_per_sample) * c.global_batch << " (fwd+bwd, all MACs x 2)\n"
    << "  steps        " << c.steps << " (warm-up " << c.warmup_steps << ", " << c.lr_schedule << " lr " << c.lr << ")\n"
    << "  compute C    " << p.gflops_per_sample_s1 * c.global_batch * c.steps << " GFLOPs ([S1]: 3 x 2 x linear/conv MACs x samples)\n";
  return o.str();
}

// ---- The trainer -----------------------------------------------------------------------------

// The EMA weights in the model for a scope (sampling, alignment), the trained ones back by
// restore() at its end, or by the destructor when an exception leaves the scope.
// The swap is a collective under zero1/2, so it is not undone while an exception only this rank
// holds unwinds (core/error.h: the run is ending, and the peers would never join); a CollectiveError,
// which every rank holds, undoes it on every rank.
class EmaWeights {
 public:
  EmaWeights(dist::ShardedParameters& params, bool on) : params_(params), on_(on) {
    if (on_) params_.swap_ema();
  }
  void restore() {  // at the end of the scope (errors propagate)
    if (on_) params_.swap_ema();
    on_ = false;
  }
  ~EmaWeights() {  // on the way out of an exception
    if (!on_ || unwinding()) return;
    try {
      params_.swap_ema();
    } catch (...) {  // the exception on its way out says what failed
    }
  }
  EmaWeights(const EmaWeights&) = delete;
  EmaWeights& operator=(const EmaWeights&) = delete;

 private:
  dist::ShardedParameters& params_;
  bool on_;
};

class Trainer {
 public:
  Trainer(const TrainConfig& c, std::string config_toml, dist::MpiRuntime& rt, const torch::Device& device, const RunDirectory& dir,
          const DataPlan& data, const Plan& plan, ResumePlan resume, dist::Watchdog& watchdog, std::unique_ptr<AlignmentHook> align)
      : c_(c), toml_(std::move(config_toml)), rt_(rt), device_(device), dir_(dir), run_(dir.path()), data_(data), plan_(plan),
        resume_(std::move(resume)), watchdog_(&watchdog), align_(std::move(align)) {}

  int run();

 private:
  void build();
  void resume();
  // A step's figures that live on the compute device: its loss (averaged over ranks) and global
  // gradient norm, one element each. On a GPU they are read a window at a time (resolve), so the
  // step loop never waits for the device.
  struct PendingStep {
    int64_t step = 0;
    torch::Tensor loss, grad_norm;
  };
  struct StepResult {
    PendingStep pending;
    double image_noun_pairs = 0;
    bool preempt = false;  // some rank got SIGTERM / SIGUSR1 before this step's reduction
  };
  // The steps since the last metrics record.
  struct Window {
    double time = 0, data_wait = 0, loss = 0;
    int64_t steps = 0, finite = 0;
  };
  StepResult train_step(const data::Batch& batch, int64_t step);
  void resolve();
  void log_window(int64_t step, Clock::time_point start, int64_t first);
  void evaluate(int64_t step);
  void sample(int64_t step);
  void align(int64_t step);
  SamplerSetup sampler_setup();  // the run's sampler: its model, objective, device, steps, guidance  // the alignment score (train/evaluation.h), a metrics record
  void checkpoint(int64_t step);
  void finish();  // the end of the run: checkpoint, evaluation, samples, DONE
  // After a resume at step S: the evaluation and samples due at S that the interrupted run did not
  // write (it stopped between the checkpoint and them) are made now, so none is lost.
  void catch_up();
  void check_data_fits_model(const data::Loader& loader, const std::vector<std::string>& dirs, const char* field) const;
  json meta(int64_t step) const;
  void write_metrics(const json& record);
  // The backbone on device tensors, the latents laid out as configured (channels_last: NHWC).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& text, const torch::Tensor& mask,
                        const models::ControlInputs* controls) const;

  TrainConfig c_;
  std::string toml_;
  dist::MpiRuntime& rt_;
  torch::Device device_;  // where the model computes: the CPU, or this rank's GPU
  const RunDirectory& dir_;
  fs::path run_;
  DataPlan data_;
  Plan plan_;
  ResumePlan resume_;
  dist::Watchdog* watchdog_;  // (watches start-up too: owned by trainer_main)
  std::unique_ptr<AlignmentHook> align_;  // null: alignment off
  int64_t last_checkpoint_ = -1;  // the step of the newest checkpoint this run holds
  std::unique_ptr<dist::Communicator> comm_;
  std::unique_ptr<models::Backbone> model_;
  std::unique_ptr<dist::ShardedParameters> params_;
  std::vector<models::UnitLayout> layout_;  // where each named parameter lives in the checkpoint
  std::unique_ptr<data::Loader> loader_;
  std::unique_ptr<diffusion::Objective> objective_;
  data::Batch eval_batch_, prompts_;
  bool have_eval_ = false;
  LrSchedule lr_;
  double peak_tflops_ = 0;
  std::vector<PendingStep> pending_;  // stepped, not yet read back
  Window window_;
  double last_grad_norm_ = std::nan("");
  // Counters carried through checkpoints.
  int64_t step_ = 0, samples_ = 0, bad_in_a_row_ = 0, bad_total_ = 0, skipped_total_ = 0;
  double compute_gflops_ = 0, image_noun_pairs_ = 0;
};

torch::Tensor Trainer::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& text, const torch::Tensor& mask,
                               const models::ControlInputs* controls) const {
  // Convolutions keep the layout of their input, so NHWC latents carry it through the UNet.
  const torch::Tensor input = c_.channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
  return model_->forward(input, t, text, mask, controls);
}

void Trainer::build() {
  const int W = rt_.world();
  comm_ = dist::make_communicator(rt_, device_);
  torch::manual_seed(c_.seed);  // identical initialisation on every rank
  model_ = models::build_backbone(plan_.backbone);
  if (!c_.init_weights.empty() && !resume_.checkpoint) {  // (a resumed run has its own weights)
    ckpt::load_weights(c_.init_weights, model_->module());
    log_info("initial weights from " + c_.init_weights);
  }
  model_->module().to(device_);  // (after the weights are read: every rank moves identical values)
  layout_ = models::parameter_layout(model_->module(), model_->unit_model());
  dist::ShardingConfig sc;
  sc.strategy = dist::parse_sharding_strategy("sharding", c_.sharding);
  sc.adamw = {c_.lr, c_.beta1, c_.beta2, c_.eps, c_.weight_decay};
  sc.activation_checkpointing = c_.activation_checkpointing;
  sc.ema_decay = c_.ema_decay;
  sc.compute_dtype = dist::parse_compute_dtype("compute_dtype", c_.compute_dtype);
  if (sc.compute_dtype == torch::kBFloat16 && device_.is_cpu())
    log_warn("compute_dtype = bf16 on the CPU: LibTorch emulates bf16 there (measured ~14x slower than fp32 on the "
             "quickstart); the compute copy is meant for GPUs");
  params_ = std::make_unique<dist::ShardedParameters>(model_->unit_model(), comm_.get(), sc);

  data::LoaderConfig lc;
  lc.dirs = data_.train_dirs;
  lc.weights = c_.data_weights;
  lc.global_batch = c_.global_batch;
  lc.rank = rt_.rank();
  lc.world = W;
  lc.seed = c_.seed;
  lc.p_synthetic_caption = c_.p_synthetic_caption;
  lc.synthetic_top_k = c_.synthetic_top_k;
  lc.random_flip = c_.random_flip;
  lc.padding.policy = diffusion::parse_text_padding("text_padding", c_.text_padding);
  lc.padding.max_tokens = c_.max_tokens;
  lc.padding.seed = c_.seed;
  lc.prefetch = c_.prefetch;
  lc.workers = c_.workers;
  lc.skip_bad_samples = c_.skip_bad_samples;
  loader_ = std::make_unique<data::Loader>(lc);
  check_data_fits_model(*loader_, lc.dirs, "data");

  diffusion::ScheduleConfig sched;
  sched.kind = diffusion::parse_beta_schedule("beta_schedule", c_.beta_schedule);
  sched.num_timesteps = c_.num_timesteps;
  sched.zero_terminal_snr = c_.zero_terminal_snr;
  diffusion::ObjectiveConfig oc;
  oc.target = diffusion::parse_target("target", c_.target);
  oc.weighting = diffusion::parse_loss_weighting("loss_weighting", c_.loss_weighting);
  oc.sampling = diffusion::parse_timestep_sampling("timestep_sampling", c_.timestep_sampling);
  oc.p_drop_text = c_.p_drop_text;
  oc.p_drop_control = c_.p_drop_control;
  oc.seed = c_.seed;
  objective_ = std::make_unique<diffusion::Objective>(oc, diffusion::NoiseSchedule::make(sched));

  lr_ = {c_.lr, c_.warmup_steps, c_.steps, c_.lr_schedule == "cosine", c_.min_lr_ratio};

  // Held-out evaluation batch (this rank's part) and the sampling prompts (the same on every rank).
  if (!data_.eval_dirs.empty()) {
    data::LoaderConfig ec = lc;
    ec.dirs = data_.eval_dirs;
    ec.weights.clear();
    ec.p_synthetic_caption = 0;
    ec.random_flip = false;
    ec.prefetch = 0;
    ec.workers = 1;
    ec.skip_bad_samples = false;
    data::Loader probe(ec);  // (global_batch below needs the set's size)
    check_data_fits_model(probe, ec.dirs, "eval_data");
    int64_t n = 0;
    for (size_t i = 0; i < ec.dirs.size(); ++i) n += probe.dataset_size(static_cast<int64_t>(i));
    ec.global_batch = std::max<int64_t>(W, std::min<int64_t>(64, n) / W * W);
    eval_batch_ = data::Loader(ec).load_batch(0);
    ec.rank = 0;
    ec.world = 1;
    ec.global_batch = std::max<int64_t>(1, std::min<int64_t>(c_.sample_count, n));
    prompts_ = data::Loader(ec).load_batch(0);
    have_eval_ = true;
  } else {
    log_warn("no eval_data: held-out loss and sample prompts are off (set eval_data to held-out shards)");
  }
  // MFU's denominator: a GPU's matmul rate in the compute dtype, the CPU's in fp32 (its bf16 is emulated).
  peak_tflops_ = c_.peak_tflops > 0 ? c_.peak_tflops : measure_matmul_tflops(device_.str(), device_.is_cuda() ? c_.compute_dtype : "fp32");
}

void Trainer::resume() {
  if (!resume_.checkpoint) return;
  const std::string from = *resume_.checkpoint;
  json m;
  // Every rank reads; a failure on any (a corrupt dataset, a checksum) is every rank's, with the
  // previous sound checkpoint named when --resume auto picked a broken newest one.
  try {
    dist::agree(rt_.comm(), [&] { m = ckpt::load_checkpoint(from, *params_, &layout_); });
  } catch (const CollectiveError& e) {
    const std::string hint = c_.resume == "auto" && rt_.rank() == 0 ? previous_checkpoint_hint(run_ / "ckpt", resume_.step) : "";
    throw CollectiveError(e.where(), e.detail() + hint);
  }
  step_ = m.at("trainer").at("step").get<int64_t>();
  samples_ = m["trainer"]["samples"].get<int64_t>();
  compute_gflops_ = m["trainer"]["compute_gflops"].get<double>();
  image_noun_pairs_ = m["trainer"]["image_noun_pairs"].get<double>();
  bad_total_ = m["trainer"]["bad_steps"].get<int64_t>();
  skipped_total_ = m["trainer"].value("skipped_samples", int64_t{0});
  dist::agree(rt_.comm(), [&] { loader_->restore(data::LoaderState::from_json(m.at("loader"))); });
  last_checkpoint_ = step_;
  log_info("resumed from " + from + " at step " + std::to_string(step_) + " (saved by " +
           std::to_string(m.value("saved_by_world_size", 0)) + " ranks, now " + std::to_string(rt_.world()) + ")");
}

void Trainer::check_data_fits_model(const data::Loader& loader, const std::vector<std::string>& dirs, const char* field) const {
  const models::BackboneInputs& in = plan_.backbone.inputs;
  const auto& shape = loader.latent_shape();
  const std::vector<int64_t> want = {in.latent_channels, in.latent_size, in.latent_size};
  std::string where = std::string(field) + " " + (dirs.empty() ? "" : dirs.front());
  for (size_t i = 1; i < dirs.size(); ++i) where += ", " + dirs[i];
  auto fmt = [](const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); };
  if (shape != want)
    throw Error(where, "latents are " + fmt(shape) + " but the model takes " + fmt(want) +
                           " (from the training data): every data set of a run must have the training data's shapes");
  if (loader.text_dim() != in.text_dim)
    throw Error(where, "text embeddings are " + std::to_string(loader.text_dim()) + " wide but the model's context is " +
                           std::to_string(in.text_dim));
}

json Trainer::meta(int64_t step) const {
  return {{"trainer",
           {{"step", step},
            {"samples", samples_},
            {"compute_gflops", compute_gflops_},
            {"image_noun_pairs", image_noun_pairs_},
            {"bad_steps", bad_total_},
            {"skipped_samples", skipped_total_}}},
          {"loader", loader_->state().to_json()},
          {"seed", c_.seed},
          {"config_toml", toml_}};
}

void Trainer::checkpoint(int64_t step) {
  if (step == last_checkpoint_) return;  // (a preemption right after a scheduled save)
  resolve();  // (the bad-step count is saved)
  const dist::Watchdog::Phase phase(watchdog_, "checkpoint", step);
  const auto t0 = Clock::now();
  ckpt::SaveOptions o;
  o.keep = c_.keep_ckpts;
  o.resumed_from = resume_.checkpoint.value_or("");
  const ckpt::SaveResult r = ckpt::save_checkpoint((run_ / "ckpt").string(), step, *params_, layout_, meta(step), o);
  last_checkpoint_ = step;
  if (r.already_saved) {
    log_info("checkpoint " + r.dir + " is the one this run resumed from: kept as it is");
    return;
  }
  char took[32];
  std::snprintf(took, sizeof took, "%.3f s", seconds_since(t0));
  log_info("checkpoint " + r.dir + " (" + format_bytes(static_cast<double>(r.bytes)) + ", " + took + ")" +
           (r.replaced ? ", replacing the step_ of another trajectory" : ""));
  for (const auto& d : r.superseded)
    log_warn("checkpoint " + d + ": a newer step of the trajectory this run abandoned by resuming an older checkpoint; "
             "moved aside so that --resume auto never picks it (delete it when you do not need it)");
  for (const auto& w : r.warnings) log_warn(w);
}

void Trainer::write_metrics(const json& record) { dir_.append_metrics(record); }

// One optimizer step over this rank's part of the global batch, in micro-batches. The batch is
// prepared on the host (noise and dropout keyed per sample, as on every device) and moved to the
// compute device; nothing here waits for the device. One MPI all-reduce carries the batch's
// image-noun pairs and every rank's preemption flag.
Trainer::StepResult Trainer::train_step(const data::Batch& batch, int64_t step) {
  const int64_t micro = plan_.micro, accumulation = plan_.accumulation;
  const bool control = plan_.backbone.control_conditioning();
  torch::Tensor loss_sum = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  for (int64_t k = 0; k < accumulation; ++k) {
    const auto rows = torch::indexing::Slice(k * micro, (k + 1) * micro);
    const torch::Tensor x0 = batch.latents.index({rows});
    const std::vector<int64_t> ids(batch.sample_ids.begin() + k * micro, batch.sample_ids.begin() + (k + 1) * micro);
    const diffusion::NoisedBatch nb = objective_->make_batch(x0, ids, step - 1);
    torch::Tensor text = batch.text.index({rows}), mask = batch.text_mask.index({rows});
    if (c_.p_drop_text > 0) {
      auto [nt, nm] = null_text(micro, c_.max_tokens, plan_.backbone.inputs.text_dim);
      const torch::Tensor keep = nb.keep_text;
      text = torch::where(keep.view({-1, 1, 1}), text, nt);
      mask = torch::where(keep.view({-1, 1}), mask, nm);
    }
    models::ControlInputs controls;
    if (control) {
      controls.high = to_device(batch.controls_high.index({rows}), device_);
      controls.low = to_device(batch.controls_low.index({rows}), device_);
      std::vector<float> gamma(micro);
      for (int64_t i = 0; i < micro; ++i) gamma[i] = static_cast<float>(diffusion::power_cosine_gamma(nb.t_unit[i].item<double>()));
      controls.low_weight = to_device(torch::tensor(gamma), device_);
      controls.keep = to_device(nb.keep_control, device_);
    }
    const diffusion::NoisedBatch on_device = to_device(nb, device_);
    const torch::Tensor pred = forward(on_device.x_t, on_device.t_model, to_device(text, device_), attention_mask(mask, device_),
                                       control ? &controls : nullptr);
    const torch::Tensor loss = objective_->loss(pred, on_device);
    params_->backward(loss, k == accumulation - 1);
    loss_sum += loss.detach().to(torch::kFloat64);
  }
  StepResult r;
  torch::Tensor loss = loss_sum / static_cast<double>(accumulation);
  comm_->all_reduce(loss, dist::ReduceOp::kAvg);  // (on a GPU: queued on the device, not waited for)
  const std::vector<double> sums =
      all_reduce({batch.caption_nouns.sum().item<double>(), preemption_requested() ? 1.0 : 0.0}, MPI_SUM);
  r.image_noun_pairs = sums[0];
  r.preempt = sums[1] > 0;
  // A non-finite loss makes the gradients non-finite, and a non-finite global norm skips the update
  // on every rank (nothing changes); resolve() then counts the step as bad.
  r.pending = {step, loss, params_->step_async(c_.max_grad_norm, 1.0 / static_cast<double>(accumulation))};
  return r;
}

// Reads the pending steps' losses and norms back (on a GPU this waits for the device, and the wait
// counts as training time), then books them in order: a non-finite step is reported, and
// max_bad_steps of them in a row abort the run. On the CPU every step is resolved at once; on a
// GPU at each metrics record and before evaluation, sampling and checkpoints.
void Trainer::resolve() {
  if (pending_.empty()) return;
  const auto t0 = Clock::now();
  std::vector<torch::Tensor> figures;
  for (const auto& p : pending_) {
    figures.push_back(p.loss.to(torch::kFloat64).reshape({1}));
    figures.push_back(p.grad_norm.to(torch::kFloat64).reshape({1}));
  }
  const torch::Tensor host = torch::cat(figures).cpu();
  window_.time += seconds_since(t0);
  const std::vector<PendingStep> steps = std::move(pending_);
  pending_.clear();
  const double* v = host.data_ptr<double>();
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t step = steps[i].step;
    const double loss = v[2 * i], grad_norm = v[2 * i + 1];
    last_grad_norm_ = grad_norm;
    if (std::isfinite(loss) && std::isfinite(grad_norm)) {
      bad_in_a_row_ = 0;
      window_.loss += loss;
      ++window_.finite;
      continue;
    }
    ++bad_total_;
    if (++bad_in_a_row_ >= c_.max_bad_steps)
      throw Error("training", std::to_string(bad_in_a_row_) + " consecutive steps with a non-finite loss or gradient (step " +
                                  std::to_string(step) + ": loss " + std::to_string(loss) + ", grad norm " +
                                  std::to_string(grad_norm) + ", lr " + std::to_string(lr_.at(step)) +
                                  "); lower lr or check the data (dtdata validate)");
    log_warn("step " + std::to_string(step) + ": non-finite loss or gradient, update skipped (" + std::to_string(bad_in_a_row_) +
             " in a row)");
  }
}

void Trainer::evaluate(int64_t step) {
  if (!have_eval_) return;
  resolve();
  const dist::Watchdog::Phase phase(watchdog_, "eval", step);
  torch::NoGradGuard no_grad;
  const std::vector<double> grid = {0.1, 0.3, 0.5, 0.7, 0.9};
  std::vector<double> sums;
  const int64_t n = eval_batch_.latents.size(0);
  const torch::Tensor text = to_device(eval_batch_.text, device_), mask = attention_mask(eval_batch_.text_mask, device_);
  for (double t : grid) {
    const diffusion::NoisedBatch nb =
        to_device(objective_->make_eval_batch(eval_batch_.latents, eval_batch_.sample_ids, t), device_);
    const torch::Tensor pred = forward(nb.x_t, nb.t_model, text, mask, nullptr);
    sums.push_back(objective_->loss(pred, nb).item<double>() * static_cast<double>(n));
  }
  sums.push_back(static_cast<double>(n));
  sums = all_reduce(sums, MPI_SUM);
  json by_t = json::object();
  double mean = 0;
  for (size_t i = 0; i < grid.size(); ++i) {
    const double l = sums[i] / sums.back();
    char key[16];
    std::snprintf(key, sizeof key, "%.1f", grid[i]);
    by_t[key] = l;
    mean += l / static_cast<double>(grid.size());
  }
  // (with N, C, D and samples, as every record: fitlaws reads any metric with its scaling axes)
  write_metrics({{"eval", true},
                 {"step", step},
                 {"samples", samples_},
                 {"eval_loss", mean},
                 {"eval_loss_by_t", by_t},
                 {"eval_samples", sums.back()},
                 {"compute_gflops", compute_gflops_},
                 {"image_noun_pairs", image_noun_pairs_},
                 {"params", plan_.cost.params}});
  log_info("eval step " + std::to_string(step) + ": held-out loss " + std::to_string(mean));
}

SamplerSetup Trainer::sampler_setup() {
  SamplerSetup setup;
  setup.model = model_.get();
  setup.objective = objective_.get();
  setup.device = device_;
  setup.channels_last = c_.channels_last;
  setup.steps = c_.sample_steps;
  setup.guidance = c_.guidance_scale;
  setup.seed = c_.seed;
  return setup;
}

void Trainer::sample(int64_t step) {
  if (!have_eval_ || c_.sample_count == 0) return;
  resolve();
  const dist::Watchdog::Phase phase(watchdog_, "sample", step);
  const int64_t n = prompts_.latents.size(0);
  const auto shape = prompts_.latents.sizes().vec();
  std::vector<torch::Tensor> starts;
  for (int64_t i = 0; i < n; ++i) starts.push_back(diffusion::initial_noise(at::IntArrayRef(shape).slice(1), c_.seed, i));
  torch::Tensor images;
  {
    EmaWeights ema(*params_, c_.ema_decay > 0);
    images = sample_images(sampler_setup(), torch::stack(starts), prompts_.text, prompts_.text_mask);
    ema.restore();
  }
  if (rt_.rank() != 0) return;
  fs::create_directories(run_ / "samples");
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  if (data_.pixels && shape[1] == 3) {
    // Top row: the prompts' held-out images; bottom row: samples for their captions.
    const std::string path = (run_ / "samples" / (std::string(name) + ".png")).string();
    write_png_grid(path, torch::cat({prompts_.latents, images}), n);
    log_info("samples " + path + " (top: held-out images, bottom: samples for their captions)");
  } else {
    const std::string path = (run_ / "samples" / (std::string(name) + ".pt")).string();
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
  }
}

void Trainer::align(int64_t step) {
  if (!align_) return;
  resolve();
  const dist::Watchdog::Phase phase(watchdog_, "alignment", step);
  diffusion::TextPaddingConfig padding;
  padding.policy = diffusion::parse_text_padding("text_padding", c_.text_padding);
  padding.max_tokens = c_.max_tokens;
  padding.seed = c_.seed;
  json record;
  {
    EmaWeights ema(*params_, c_.ema_decay > 0);
    record = align_->evaluate(step, sampler_setup(), padding, rt_.comm());
    ema.restore();
  }
  record["step"] = step;
  record["samples"] = samples_;
  record["compute_gflops"] = compute_gflops_;
  record["image_noun_pairs"] = image_noun_pairs_;
  record["params"] = plan_.cost.params;
  write_metrics(record);
  char line[160];
  std::snprintf(line, sizeof line, "alignment step %lld: %.3f [%.3f, %.3f] (chance %.3f; %lld prompts) ", static_cast<long long>(step),
                record["alignment"].get<double>(), record["alignment_interval"][0].get<double>(), record["alignment_interval"][1].get<double>(),
                record["alignment_chance"].get<double>(), static_cast<long long>(record["alignment_prompts"].get<int64_t>()));
  log_info(line + record["alignment_dir"].get<std::string>());
}

std::string format_duration(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

// The metrics record and progress line of the steps since the last one (resolved already).
void Trainer::log_window(int64_t step, Clock::time_point start, int64_t first) {
  const std::vector<double> mx = all_reduce({window_.time, window_.data_wait, static_cast<double>([] {
                                               rusage ru{};
                                               getrusage(RUSAGE_SELF, &ru);
                                               return ru.ru_maxrss * 1024.0;
                                             }()),
                                             static_cast<double>(dist::peak_device_memory(device_))},
                                            MPI_MAX);
  const double steps = static_cast<double>(window_.steps);
  const double step_time = mx[0] / steps;
  const double sps = c_.global_batch / step_time;
  const double tflops = sps * static_cast<double>(plan_.train_flops_per_sample) / 1e12;
  const double mfu = tflops / (peak_tflops_ * rt_.world());
  // (NaN, written as null, when every step of the window was skipped)
  const double mean_loss = window_.finite ? window_.loss / static_cast<double>(window_.finite) : std::nan("");
  json record = {{"step", step},
                 {"samples", samples_},
                 {"loss", mean_loss},
                 {"lr", lr_.at(step)},
                 {"grad_norm", last_grad_norm_},
                 {"step_time_s", step_time},
                 {"data_wait_s", mx[1] / steps},
                 {"samples_per_s", sps},
                 {"tflops_per_s", tflops},
                 {"mfu", mfu},
                 {"max_memory_bytes", mx[2]},
                 {"compute_gflops", compute_gflops_},
                 {"image_noun_pairs", image_noun_pairs_},
                 {"params", plan_.cost.params},
                 {"bad_steps", bad_total_},
                 {"skipped_samples", skipped_total_}};
  if (device_.is_cuda()) record["max_device_memory_bytes"] = mx[3];  // the allocator's peak on the busiest rank's GPU
  write_metrics(record);
  const double eta = seconds_since(start) / static_cast<double>(step - first) * static_cast<double>(c_.steps - step);
  char line[256];
  std::snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | lr %.2e | %.1f img/s | MFU %.1f%% | ETA %s",
                static_cast<long long>(step), static_cast<long long>(c_.steps), mean_loss, lr_.at(step), sps, 100 * mfu,
                format_duration(eta).c_str());
  log_info(line);
  window_ = Window{};
}

int Trainer::run() {
  {
    const dist::Watchdog::Phase phase(watchdog_, "start-up: build and resume", 0);
    build();
    resume();
  }
  if (step_ == 0) {
    log_info(models::backbone_summary(plan_.backbone));
    log_info("training " + std::to_string(c_.steps) + " steps, global batch " + std::to_string(c_.global_batch) + " on " +
             std::to_string(rt_.world()) + " ranks (" + dist::device_name(device_) + "), " + c_.sharding + "; run directory " +
             run_.string());
  }
  if (step_ >= c_.steps && RunDirectory::state(run_) == RunState::kDone) {  // (nothing changes in a complete run)
    log_info("the run is already complete at step " + std::to_string(step_) + " (" + run_.string() +
             "); raise --steps to continue it, or use another --run-dir");
    return 0;
  }
  // The resume checks passed: only now does the run directory change.
  dist::agree(rt_.comm(), [&] {
    dir_.write_config(toml_);
    dir_.truncate_metrics(step_);  // (a fresh start keeps no records of an earlier attempt)
  });
  if (step_ >= c_.steps) {
    log_info("step " + std::to_string(step_) + " is the last; finishing the run (what is missing of its evaluation and samples)");
    catch_up();
    dist::agree(rt_.comm(), [&] { dir_.mark_done(step_); });
    log_info("done: " + std::to_string(step_) + " steps; " + (run_ / "metrics.jsonl").string());
    return 0;
  }
  catch_up();
  dist::agree(rt_.comm(), [&] { dir_.clear_markers(); });  // (a stale DONE or PREEMPTED must not mislead the job scripts)
  if (step_ == 0) align(0);  // (what an untrained model scores)
  const auto start = Clock::now();
  const int64_t first = step_;
  while (step_ < c_.steps) {
    const int64_t step = step_ + 1;
    const auto t0 = Clock::now();
    params_->set_lr(lr_.at(step));
    // EMA warm-up: early on the average would be mostly the random initialisation.
    if (c_.ema_decay > 0) params_->set_ema_decay(std::min(c_.ema_decay, (1.0 + step) / (10.0 + step)));
    data::Batch batch;
    {
      const dist::Watchdog::Phase phase(watchdog_, "data", step);
      batch = loader_->next();
    }
    StepResult result;
    {
      const dist::Watchdog::Phase phase(watchdog_, "step", step);
      result = train_step(batch, step);
    }
    step_ = step;
    samples_ += c_.global_batch;
    skipped_total_ += batch.skipped;
    compute_gflops_ += plan_.gflops_per_sample_s1 * static_cast<double>(c_.global_batch);
    image_noun_pairs_ += result.image_noun_pairs;
    pending_.push_back(result.pending);
    window_.time += seconds_since(t0);
    window_.data_wait += loader_->take_data_wait_s();
    ++window_.steps;
    const bool log_now = step % c_.log_every == 0 || step == c_.steps;
    {
      const dist::Watchdog::Phase phase(watchdog_, "log", step);
      if (device_.is_cpu() || log_now) resolve();  // (evaluate, sample and checkpoint resolve first too)
      if (log_now) log_window(step, start, first);
    }
    // The checkpoint comes first: a failing evaluation or sampling never costs the step's checkpoint.
    if (c_.ckpt_every > 0 && step % c_.ckpt_every == 0 && step != c_.steps) checkpoint(step);
    if (c_.eval_every > 0 && step % c_.eval_every == 0 && step != c_.steps) evaluate(step);
    if (c_.sample_every > 0 && step % c_.sample_every == 0 && step != c_.steps) sample(step);
    if (align_ && align_->due(step, c_.steps) && step != c_.steps) align(step);
    // Preemption: any rank's signal (seen by this step's reduction) stops every rank here.
    if (result.preempt && step != c_.steps) {
      checkpoint(step);
      dist::agree(rt_.comm(), [&] { dir_.mark_preempted(step, preemption_signal()); });
      log_info("preempted (" + (preemption_requested() ? preemption_description() : "a signal to another rank") + ") at step " + std::to_string(step) +
               ": checkpoint written, " + (run_ / "PREEMPTED").string() + " marks the stop; rerun with --resume auto to continue");
      return 0;
    }
  }
  finish();
  return 0;
}

void Trainer::catch_up() {
  if (!resume_.checkpoint || step_ == 0) return;
  const bool last = step_ >= c_.steps;
  const bool eval_due = last || (c_.eval_every > 0 && step_ % c_.eval_every == 0);
  const bool sample_due = last || (c_.sample_every > 0 && step_ % c_.sample_every == 0);
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step_));
  std::error_code ec;
  const bool align_due = align_ && align_->due(step_, c_.steps);
  int missing[3] = {eval_due && !dir_.has_record(step_, "eval") ? 1 : 0,
                    sample_due && !fs::exists(run_ / "samples" / (std::string(name) + ".png"), ec) &&
                            !fs::exists(run_ / "samples" / (std::string(name) + ".pt"), ec)
                        ? 1
                        : 0,
                    align_due && !dir_.has_record(step_, "alignment") ? 1 : 0};
  dist::note_collective();
  MPI_Bcast(missing, 3, MPI_INT, 0, MPI_COMM_WORLD);  // (rank 0 read the run directory: every rank evaluates alike)
  if (missing[0]) evaluate(step_);
  if (missing[1]) sample(step_);
  if (missing[2]) align(step_);
}

void Trainer::finish() {
  checkpoint(step_);
  evaluate(step_);
  sample(step_);
  align(step_);
  dist::agree(rt_.comm(), [&] { dir_.mark_done(step_); });  // (what the job scripts read)
  log_info("done: " + std::to_string(step_) + " steps; " + (run_ / "metrics.jsonl").string());
}

}  // namespace

int trainer_main(int argc, char** argv) {
  return dist::run_ranks(&argc, &argv, [&](dist::MpiRuntime& rt) -> int {
    TrainConfig c;
    CLI::App app{
        "dtrainer: distributed training of text-to-image diffusion backbones.\n"
        "  mpirun -n 2 dtrainer                        the quickstart (synthetic shapes, tiny UNet)\n"
        "  mpirun -n 16 dtrainer --config jobs/X.toml  a configured experiment\n"
        "Every option is also a TOML key (snake_case) for --config; the command line wins.\n"
        "The run directory holds metrics.jsonl, config.toml, ckpt/ and samples/."};
    add_train_options(app, c);
    DataPlan data;
    Plan plan;
    fs::path run_dir;
    torch::Device device = torch::kCPU;
    std::unique_ptr<AlignmentHook> align;
    // A check that fails on one rank fails on all (dist/agreement.h): every rank exits 2 and rank 0
    // prints the message, whether the problem is in the configuration (the same everywhere) or in
    // what one rank sees (a file, a device).
    auto refuse = [&](const CollectiveError& e) {
      if (rt.rank() == 0)
        std::cerr << "dtrainer: configuration error: " << (e.failures() == rt.world() ? e.detail() : std::string(e.what())) << "\n";
      return 2;
    };
    std::string error;
    try {
      parse_train_config(app, argc, argv);
    } catch (const CLI::ParseError& e) {
      std::ostringstream quiet;  // every rank parses the same argv: rank 0 speaks for all
      const int code = rt.rank() == 0 ? app.exit(e) : app.exit(e, quiet, quiet);
      return code == 0 ? 0 : 2;  // --help: 0; anything else: a configuration error
    } catch (const Error& e) {
      error = e.what();
    }
    // From here on no phase waits forever, start-up included (a hung file system, a stalled rank).
    dist::WatchdogConfig wc;
    wc.timeout_s = c.watchdog_timeout;
    wc.factor = c.watchdog_factor;
    wc.min_s = c.watchdog_min;
    dist::Watchdog watchdog(rt.comm(), wc, rt.thread_multiple());
    try {
      const dist::Watchdog::Phase phase(&watchdog, "start-up: plan", 0);
      if (!error.empty()) throw Error("", error);
      validate_train_config(c, rt.world());
      run_dir = c.run_dir.empty() ? fs::path("runs") / c.name : fs::path(c.run_dir);
      data = plan_data(c, run_dir);
      plan = make_plan(c, data, rt.world());
      if (!c.dry_run) device = dist::select_device(rt, c.device);  // (a dry run plans on a machine without the GPUs)
      if (!c.dry_run && !data.found) throw Error("data", data.train_dirs.front() + " does not exist");
      if (!c.dry_run) align = AlignmentHook::make(c, data, run_dir);
      if (!c.dry_run) {
        // Memory: the plan against what this node has left (host) and the GPU's size.
        const MemoryEstimate mem = estimate_memory(c, plan.cost, plan.world, plan.micro);
        const HostMemory host = available_host_memory();
        if (device.is_cpu())
          check_memory_fits(c, mem, rt.local_world(), static_cast<double>(host.available_bytes), "the memory available (" + host.source + ")");
        else
          check_memory_fits(c, mem, 1, static_cast<double>(dist::device_total_memory(device)), "the memory of " + device.str());
      }
    } catch (const Error& e) {
      error = e.what();
    }
    try {
      dist::agree_on(rt.comm(), error);
    } catch (const CollectiveError& e) {
      return refuse(e);
    }
    if (c.dry_run) {
      if (rt.rank() == 0) std::cout << describe_plan(c, data, plan, c.device + " (chosen at start-up)");
      return 0;
    }
    const int64_t threads =
        c.threads ? c.threads : std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / rt.local_world());
    set_compute_threads(threads);
    install_preemption_handlers();  // (a signal from here on stops the run at its first step boundary, checkpointed)
    // The run directory: created and locked (one trainer at a time), then the checkpoint to resume
    // chosen and checked against this configuration, then the weights file. Nothing in the
    // directory changes before these pass (a directory this start created is removed again).
    std::unique_ptr<RunDirectory> dir;
    ResumePlan resume;
    std::error_code ec;
    const bool existed = fs::exists(run_dir, ec);
    try {
      std::string holder = "dtrainer";
      for (int i = 1; i < argc; ++i) holder += std::string(" ") + argv[i];
      holder += ", " + std::to_string(rt.world()) + " rank" + (rt.world() > 1 ? "s" : "");
      const dist::Watchdog::Phase phase(&watchdog, "start-up: run directory", 0);
      dist::agree(rt.comm(), [&] { dir = std::make_unique<RunDirectory>(run_dir, rt.rank(), holder); });
      dist::agree(rt.comm(), [&] {
        resume = plan_resume(c, run_dir);
        if (!c.init_weights.empty() && !resume.checkpoint)
          ckpt::check_weights_file(c.init_weights);  // well-formed and finite, before anything is written
      });
    } catch (const CollectiveError& e) {
      const bool created = dir && !existed;
      dir.reset();
      if (created && rt.rank() == 0) try_remove_tree(run_dir);
      return refuse(e);
    }
    const std::string toml = train_config_toml(c);
    if (rt.rank() == 0)
      std::cout << describe_plan(c, data, plan, dist::device_name(device) + (device.is_cuda() ? " (" + device.str() + " on rank 0)" : ""))
                << std::flush;
    {
      const dist::Watchdog::Phase phase(&watchdog, "start-up: synthetic data", 0);
      synthesize_if_needed(c, data, rt.rank());
      if (c.data.size() == 1 && c.data[0] == "synthetic:shapes") data = plan_data(c, run_dir);
    }
    Trainer trainer(c, toml, rt, device, *dir, data, plan, std::move(resume), watchdog, std::move(align));
    return trainer.run();
  });
}

}  // namespace dtrainer::train
