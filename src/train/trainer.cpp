#include "dtrainer/dist/host_collectives.h"
#include "dtrainer/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/core/log.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/diffusion/objective.h"
#include "dtrainer/diffusion/sampler.h"
#include "dtrainer/diffusion/schedule.h"
#include "dtrainer/dist/agreement.h"
#include "dtrainer/dist/device_stats.h"
#include "dtrainer/dist/local_device.h"
#include "dtrainer/dist/sharded_params.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/models/parameter_layout.h"
#include "dtrainer/train/ema_weights.h"
#include "dtrainer/train/image_grid.h"
#include "dtrainer/train/lr_schedule.h"
#include "dtrainer/train/metrics_log.h"
#include "dtrainer/train/preemption.h"
#include "dtrainer/train/sampling.h"
#include "dtrainer/train/evaluation.h"
#include "dtrainer/train/throughput_bench.h"
#include "dtrainer/train/training_stack.h"
#include "dtrainer/train/training_progress.h"
#include "dtrainer/train/step_window.h"
#include "dtrainer/train/run_checkpoints.h"
#include "dtrainer/train/component_configs.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace dtrainer::train {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---- The trainer -----------------------------------------------------------------------------

class Trainer {
 public:
  Trainer(const TrainConfig& c, std::string config_toml, dist::MpiRuntime& rt, const torch::Device& device,
          const RunDirectory& dir, const DataPlan& data, const StartupPlan& plan, ResumePlan resume,
          dist::Watchdog& watchdog, std::unique_ptr<AlignmentHook> align)
      : c_(c),
        toml_(std::move(config_toml)),
        rt_(rt),
        device_(device),
        dir_(dir),
        metrics_(dir, rt.rank()),
        run_(dir.path()),
        data_(data),
        plan_(plan),
        resume_(std::move(resume)),
        watchdog_(&watchdog),
        eval_(c_, data, dir.path(), std::move(align), rt.comm()),
        checkpoints_(c_, dir.path(), resume_, toml_) {}

  int run();

 private:
  void build();
  void resume();
  struct StepResult {
    PendingStep pending;
    double image_noun_pairs = 0;
    bool preempt = false;  // some rank got SIGTERM / SIGUSR1 before this step's reduction
  };
  StepResult train_step(const data::Batch& batch, int64_t step);
  void resolve();
  void log_window(int64_t step, Clock::time_point start, int64_t first);
  void evaluate(int64_t step);
  void sample(int64_t step);
  void align(int64_t step);
  EvalModel eval_model() const { return {model_.get(), objective_.get(), params_.get(), device_, c_.channels_last}; }
  json with_axes(json record, int64_t step) const;  // the step, samples, N, C and D every record carries
  void checkpoint(int64_t step);
  void finish();  // the end of the run: checkpoint, evaluation, samples, DONE
  // After a resume at step S: the evaluation and samples due at S that the interrupted run did not
  // write (it stopped between the checkpoint and them) are made now, so none is lost.
  void catch_up();
  void write_metrics(const json& record);

  TrainConfig c_;
  std::string toml_;
  dist::MpiRuntime& rt_;
  torch::Device device_;  // where the model computes: the CPU, or this rank's GPU
  const RunDirectory& dir_;
  MetricsLog metrics_;  // metrics.jsonl and TensorBoard's tb/
  fs::path run_;
  DataPlan data_;
  StartupPlan plan_;
  ResumePlan resume_;
  dist::Watchdog* watchdog_;    // (watches start-up too: owned by trainer_main)
  Evaluation eval_;             // held-out loss, samples, alignment
  RunCheckpoints checkpoints_;  // resume and saves
  std::unique_ptr<dist::Communicator> comm_;
  std::unique_ptr<models::Backbone> model_;
  std::unique_ptr<dist::ShardedParameters> params_;
  std::vector<models::UnitLayout> layout_;  // where each named parameter lives in the checkpoint
  std::unique_ptr<data::Loader> loader_;
  std::unique_ptr<diffusion::Objective> objective_;
  LrSchedule lr_;
  double peak_tflops_ = 0;
  StepWindow window_;          // the steps since the last metrics record
  TrainingProgress progress_;  // carried through checkpoints
};

void Trainer::build() {
  const TrainingStackConfig sc = training_stack_config(c_, plan_, resume_.checkpoint.has_value());
  if (sc.sharding.compute_dtype == torch::kBFloat16 && device_.is_cpu())
    log_warn(
        "compute_dtype = bf16 on the CPU: LibTorch emulates bf16 there (measured ~14x slower than fp32 on the "
        "quickstart); the compute copy is meant for GPUs");
  TrainingStack stack = build_training_stack(sc, rt_, device_);
  if (!sc.init_weights.empty()) log_info("initial weights from " + sc.init_weights);
  comm_ = std::move(stack.comm);
  model_ = std::move(stack.model);
  params_ = std::move(stack.params);
  layout_ = std::move(stack.layout);
  const data::LoaderConfig lc = training_loader_config(c_, data_, rt_.rank(), rt_.world());
  loader_ = std::make_unique<data::Loader>(lc);
  check_data_fits(*loader_, plan_.backbone.inputs, lc.dirs, "data");
  objective_ = make_objective(c_);
  lr_ = make_lr_schedule(c_);
  eval_.load(lc, plan_.backbone.inputs);
  // MFU's denominator: a GPU's matmul rate in the compute dtype, the CPU's in fp32 (its bf16 is emulated).
  peak_tflops_ = c_.peak_tflops > 0
                     ? c_.peak_tflops
                     : measure_matmul_tflops(device_.str(), device_.is_cuda() ? c_.compute_dtype : "fp32");
}

void Trainer::resume() {
  json loader_state;
  if (checkpoints_.resume(*params_, layout_, rt_.comm(), rt_.rank(), progress_, loader_state))
    dist::agree(rt_.comm(), [&] { loader_->restore(data::LoaderState::from_json(loader_state)); });
}

void Trainer::checkpoint(int64_t step) {
  if (step == checkpoints_.newest()) return;
  resolve();  // (the bad-step count is saved)
  const dist::Watchdog::Phase phase(watchdog_, "checkpoint", step);
  checkpoints_.save(progress_, loader_->state().to_json(), *params_, layout_);
}

void Trainer::write_metrics(const json& record) { metrics_.write(record); }

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
      for (int64_t i = 0; i < micro; ++i)
        gamma[i] = static_cast<float>(diffusion::power_cosine_gamma(nb.t_unit[i].item<double>()));
      controls.low_weight = to_device(torch::tensor(gamma), device_);
      controls.keep = to_device(nb.keep_control, device_);
    }
    const diffusion::NoisedBatch on_device = to_device(nb, device_);
    const torch::Tensor pred =
        forward_backbone(*model_, c_.channels_last, on_device.x_t, on_device.t_model, to_device(text, device_),
                         attention_mask(mask, device_), control ? &controls : nullptr);
    const torch::Tensor loss = objective_->loss(pred, on_device);
    params_->backward(loss, k == accumulation - 1);
    loss_sum += loss.detach().to(torch::kFloat64);
  }
  StepResult r;
  torch::Tensor loss = loss_sum / static_cast<double>(accumulation);
  comm_->all_reduce(loss, dist::ReduceOp::kAvg);  // (on a GPU: queued on the device, not waited for)
  const dist::NamedFigures sums = dist::NamedFigures{{"image_noun_pairs", batch.caption_nouns.sum().item<double>()},
                                                     {"preempt", preemption_requested() ? 1.0 : 0.0}}
                                      .reduced(rt_.comm(), dist::HostOp::kSum);
  r.image_noun_pairs = sums["image_noun_pairs"];
  r.preempt = sums["preempt"] > 0;
  // A non-finite loss makes the gradients non-finite, and a non-finite global norm skips the update
  // on every rank (nothing changes); resolve() then counts the step as bad.
  r.pending = {step, loss, params_->step_async(c_.max_grad_norm, 1.0 / static_cast<double>(accumulation))};
  return r;
}

// Reads the pending steps' losses and norms back (on a GPU this waits for the device, and the wait
// counts as training time), then books them in order: a non-finite step is reported, and
// max_bad_steps of them in a row abort the run. On the CPU every step is resolved at once; on a
// GPU at each metrics record and before evaluation, sampling and checkpoints.
void Trainer::resolve() { window_.resolve(c_.max_bad_steps, lr_, progress_.bad_steps); }

json Trainer::with_axes(json record, int64_t step) const {
  // (every record has N, C, D and samples: fitlaws reads any metric with its scaling axes)
  record["step"] = step;
  record["samples"] = progress_.samples;
  record["compute_gflops"] = progress_.compute_gflops;
  record["image_noun_pairs"] = progress_.image_noun_pairs;
  record["params"] = plan_.cost.params;
  return record;
}

void Trainer::evaluate(int64_t step) {
  if (!eval_.held_out()) return;
  resolve();
  const dist::Watchdog::Phase phase(watchdog_, "eval", step);
  const json record = with_axes(eval_.held_out_loss(eval_model(), step), step);
  write_metrics(record);
  log_info("eval step " + std::to_string(step) + ": held-out loss " +
           std::to_string(record["eval_loss"].get<double>()));
}

void Trainer::sample(int64_t step) {
  if (!eval_.held_out() || c_.sample_count == 0) return;
  resolve();
  const dist::Watchdog::Phase phase(watchdog_, "sample", step);
  eval_.sample_grid(eval_model(), step);
}

void Trainer::align(int64_t step) {
  if (!eval_.alignment_on()) return;
  resolve();
  const dist::Watchdog::Phase phase(watchdog_, "alignment", step);
  const json record = with_axes(eval_.alignment(eval_model(), step), step);
  write_metrics(record);
  char line[160];
  std::snprintf(line, sizeof line, "alignment step %lld: %.3f [%.3f, %.3f] (chance %.3f; %lld prompts) ",
                static_cast<long long>(step), record["alignment"].get<double>(),
                record["alignment_interval"][0].get<double>(), record["alignment_interval"][1].get<double>(),
                record["alignment_chance"].get<double>(),
                static_cast<long long>(record["alignment_prompts"].get<int64_t>()));
  log_info(line + record["alignment_dir"].get<std::string>());
}

std::string format_duration(double s) {
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

// The metrics record and progress line of the steps since the last one (resolved already).
void Trainer::log_window(int64_t step, Clock::time_point start, int64_t first) {
  const WindowFigures w = window_.close(rt_.comm(), device_);
  const double sps = c_.global_batch / w.step_time_s;
  const double flops = static_cast<double>(plan_.train_flops_per_sample);
  const double tflops = achieved_tflops(flops, sps),
               mfu = model_flops_utilization(flops, sps, peak_tflops_, rt_.world());
  json record = with_axes({{"loss", w.mean_loss},  // (NaN, written as null, when every step of the window was skipped)
                           {"lr", lr_.at(step)},
                           {"grad_norm", w.grad_norm},
                           {"step_time_s", w.step_time_s},
                           {"data_wait_s", w.data_wait_s},
                           {"samples_per_s", sps},
                           {"tflops_per_s", tflops},
                           {"mfu", mfu},
                           {"max_memory_bytes", w.max_memory_bytes},
                           {"bad_steps", progress_.bad_steps},
                           {"skipped_samples", progress_.skipped_samples}},
                          step);
  if (device_.is_cuda())
    record["max_device_memory_bytes"] = w.max_device_memory_bytes;  // the allocator's peak on the busiest rank's GPU
  write_metrics(record);
  const double eta = seconds_since(start) / static_cast<double>(step - first) * static_cast<double>(c_.steps - step);
  char line[256];
  std::snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | lr %.2e | %.1f img/s | MFU %.1f%% | ETA %s",
                static_cast<long long>(step), static_cast<long long>(c_.steps), w.mean_loss, lr_.at(step), sps,
                100 * mfu, format_duration(eta).c_str());
  log_info(line);
}

int Trainer::run() {
  {
    const dist::Watchdog::Phase phase(watchdog_, "start-up: build and resume", 0);
    build();
    resume();
  }
  if (progress_.step == 0) {
    log_info(models::backbone_summary(plan_.backbone));
    log_info("training " + std::to_string(c_.steps) + " steps, global batch " + std::to_string(c_.global_batch) +
             " on " + std::to_string(rt_.world()) + " ranks (" + dist::device_name(device_) + "), " + c_.sharding +
             "; run directory " + run_.string());
  }
  if (progress_.step >= c_.steps &&
      RunDirectory::state(run_) == RunState::kDone) {  // (nothing changes in a complete run)
    log_info("the run is already complete at step " + std::to_string(progress_.step) + " (" + run_.string() +
             "); raise --steps to continue it, or use another --run-dir");
    return 0;
  }
  // The resume checks passed: only now does the run directory change.
  dist::agree(rt_.comm(), [&] {
    dir_.write_config(toml_);
    metrics_.start(progress_.step);  // (a fresh start keeps no records of an earlier attempt)
  });
  if (progress_.step >= c_.steps) {
    log_info("step " + std::to_string(progress_.step) +
             " is the last; finishing the run (what is missing of its evaluation and samples)");
    catch_up();
    dist::agree(rt_.comm(), [&] { dir_.mark_done(progress_.step); });
    log_info("done: " + std::to_string(progress_.step) + " steps; " + (run_ / "metrics.jsonl").string());
    return 0;
  }
  catch_up();
  dist::agree(rt_.comm(),
              [&] { dir_.clear_markers(); });  // (a stale DONE or PREEMPTED must not mislead the job scripts)
  if (progress_.step == 0) align(0);           // (what an untrained model scores)
  const auto start = Clock::now();
  const int64_t first = progress_.step;
  while (progress_.step < c_.steps) {
    const int64_t step = progress_.step + 1;
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
    progress_.step = step;
    progress_.samples += c_.global_batch;
    progress_.skipped_samples += batch.skipped;
    progress_.compute_gflops += plan_.gflops_per_sample_s1 * static_cast<double>(c_.global_batch);
    progress_.image_noun_pairs += result.image_noun_pairs;
    window_.add(result.pending, seconds_since(t0), loader_->take_data_wait_s());
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
    if (eval_.alignment_due(step, c_.steps) && step != c_.steps) align(step);
    // Preemption: any rank's signal (seen by this step's reduction) stops every rank here.
    if (result.preempt && step != c_.steps) {
      checkpoint(step);
      dist::agree(rt_.comm(), [&] { dir_.mark_preempted(step, preemption_signal()); });
      log_info("preempted (" + (preemption_requested() ? preemption_description() : "a signal to another rank") +
               ") at step " + std::to_string(step) + ": checkpoint written, " + (run_ / "PREEMPTED").string() +
               " marks the stop; rerun with --resume auto to continue");
      return 0;
    }
  }
  finish();
  return 0;
}

void Trainer::catch_up() {
  if (!resume_.checkpoint || progress_.step == 0) return;
  const bool last = progress_.step >= c_.steps;
  const bool eval_due = last || (c_.eval_every > 0 && progress_.step % c_.eval_every == 0);
  const bool sample_due = last || (c_.sample_every > 0 && progress_.step % c_.sample_every == 0);
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(progress_.step));
  std::error_code ec;
  const bool align_due = eval_.alignment_due(progress_.step, c_.steps);
  std::vector<int64_t> missing = {eval_due && !dir_.has_record(progress_.step, "eval") ? 1 : 0,
                                  sample_due && !fs::exists(run_ / "samples" / (std::string(name) + ".png"), ec) &&
                                          !fs::exists(run_ / "samples" / (std::string(name) + ".pt"), ec)
                                      ? 1
                                      : 0,
                                  align_due && !dir_.has_record(progress_.step, "alignment") ? 1 : 0};
  dist::broadcast_host(rt_.comm(), missing);  // (rank 0 read the run directory: every rank evaluates alike)
  if (missing[0]) evaluate(progress_.step);
  if (missing[1]) sample(progress_.step);
  if (missing[2]) align(progress_.step);
}

void Trainer::finish() {
  checkpoint(progress_.step);
  evaluate(progress_.step);
  sample(progress_.step);
  align(progress_.step);
  dist::agree(rt_.comm(), [&] { dir_.mark_done(progress_.step); });  // (what the job scripts read)
  log_info("done: " + std::to_string(progress_.step) + " steps; " + (run_ / "metrics.jsonl").string());
}

}  // namespace

int train(TrainerSetup setup, dist::MpiRuntime& rt, const RunDirectory& dir, dist::Watchdog& watchdog) {
  Trainer trainer(setup.config, std::move(setup.config_toml), rt, setup.device, dir, setup.data, setup.plan,
                  std::move(setup.resume), watchdog, std::move(setup.align));
  return trainer.run();
}

}  // namespace dtrainer::train
