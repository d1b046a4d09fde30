#include "dtrainer/train/trainer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/ckpt/phema_snapshot.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/core/log.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/diffusion/objective.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/device_stats.h"
#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/train/component_configs.h"
#include "dtrainer/train/lr_schedule.h"
#include "dtrainer/train/metrics_log.h"
#include "dtrainer/train/micro_batch.h"
#include "dtrainer/train/preemption.h"
#include "dtrainer/train/run_checkpoints.h"
#include "dtrainer/train/sampling.h"
#include "dtrainer/train/step_window.h"
#include "dtrainer/train/training_progress.h"
#include "dtrainer/train/training_stack.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace dtrainer::train {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---- The trainer -----------------------------------------------------------------------------

class Trainer {
 public:
  Trainer(TrainerSetup setup, parallel::MpiRuntime& rt, const RunDirectory& dir, parallel::Watchdog& watchdog)
      : s_(std::move(setup)),
        c_(s_.config),
        rt_(rt),
        device_(s_.device),
        dir_(dir),
        run_(dir.path()),
        plan_(s_.plan),
        watchdog_(&watchdog),
        metrics_(dir, rt.rank()),
        eval_(c_, s_.data, run_, std::move(s_.align), rt.comm()),
        checkpoints_(c_, run_, s_.resume, s_.config_toml,
                     {{"latent_size", s_.plan.backbone.inputs.latent_size},
                      {"resolution_scale", s_.plan.stage.resolution_scale}}) {}

  int run();

 private:
  // `work` as the watchdog's phase `name` of `step` (docs/RELIABILITY.md: a phase that overruns is named).
  template <class Work>
  auto watched(const char* name, int64_t step, Work&& work) {
    const parallel::Watchdog::Phase phase(watchdog_, name, step);
    return work();
  }
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
  EvalModel eval_model() const {
    return {stack_.model.get(), objective_.get(), stack_.params.get(), device_, c_.channels_last};
  }
  json with_axes(json record) const { return progress_.with_axes(std::move(record), plan_.cost.params); }
  void checkpoint(int64_t step);
  // The power-function profiles' snapshot of `step`, when one is due (train/weight_averaging.h).
  void snapshot(int64_t step);
  void finish();  // the end of the run: checkpoint, evaluation, samples, alignment, DONE
  int done();     // DONE written; 0
  // After a resume at step S: the evaluations due at S that the interrupted run did not write (it
  // stopped between the checkpoint and them) are made now, so none is lost.
  void catch_up();

  TrainerSetup s_;
  const TrainConfig& c_;
  parallel::MpiRuntime& rt_;
  const torch::Device device_;  // where the model computes: the CPU, or this rank's GPU
  const RunDirectory& dir_;
  const fs::path run_;
  const StartupPlan& plan_;
  parallel::Watchdog* watchdog_;  // (watches start-up too: owned by tools/dtrainer.cpp)
  MetricsLog metrics_;            // metrics.jsonl and TensorBoard's tb/
  Evaluation eval_;               // held-out loss, samples, alignment
  RunCheckpoints checkpoints_;    // resume and saves
  TrainingStack stack_;           // model, communicator, sharded parameters and optimizer
  std::unique_ptr<data::Loader> loader_;
  std::unique_ptr<diffusion::Objective> objective_;
  LrSchedule lr_;
  double peak_tflops_ = 0;     // per rank, MFU's denominator
  StepWindow window_;          // the steps since the last metrics record
  TrainingProgress progress_;  // carried through checkpoints
};

void Trainer::build() {
  const TrainingStackConfig sc = training_stack_config(c_, plan_, s_.resume.checkpoint.has_value());
  stack_ = build_training_stack(sc, rt_, device_);
  if (!sc.init_weights.empty()) log_info("initial weights from " + sc.init_weights);
  if (!sc.init_from.empty()) log_info("stage: initial weights from " + sc.init_from);
  const data::LoaderConfig lc = training_loader_config(c_, s_.data, rt_.rank(), rt_.world());
  loader_ = std::make_unique<data::Loader>(lc);
  check_data_fits(*loader_, plan_.backbone.inputs, lc.dirs, "data");
  objective_ = make_objective(c_, plan_.backbone.inputs.latent_size);
  lr_ = make_lr_schedule(c_);
  eval_.load(lc, plan_.backbone.inputs);
  peak_tflops_ = peak_tflops_per_rank(c_.peak_tflops, device_, c_.compute_dtype);
}

void Trainer::resume() {
  json loader_state;
  if (checkpoints_.resume(*stack_.params, stack_.layout, rt_.comm(), rt_.rank(), progress_, loader_state))
    parallel::agree(rt_.comm(), [&] { loader_->restore(data::LoaderState::from_json(loader_state)); });
}

void Trainer::checkpoint(int64_t step) {
  if (step == checkpoints_.newest()) return;
  resolve();  // (the bad-step count is saved)
  watched("checkpoint", step,
          [&] { checkpoints_.save(progress_, loader_->state().to_json(), *stack_.params, stack_.layout, rt_.comm()); });
}

void Trainer::snapshot(int64_t step) {
  if (!phema_snapshot_due(c_, step)) return;
  resolve();
  const torch::ScalarType dtype = c_.phema_snapshot_dtype == SnapshotDtype::kFp16   ? torch::kFloat16
                                  : c_.phema_snapshot_dtype == SnapshotDtype::kBf16 ? torch::kBFloat16
                                                                                    : torch::kFloat32;
  const json identity = {{"seed", c_.seed}, {"model", c_.model}, {"model_set", c_.model_set}};
  const auto t0 = Clock::now();
  const ckpt::PhemaSnapshotSave r = watched("phema snapshot", step, [&] {
    return ckpt::save_phema_snapshot((run_ / "phema").string(), step * c_.global_batch, step, *stack_.params,
                                     stack_.layout, dtype, identity, s_.config_toml, rt_.comm());
  });
  char took[32];
  std::snprintf(took, sizeof took, "%.3f s", seconds_since(t0));
  log_info("phema snapshot " + r.dir + " (" + format_bytes(static_cast<double>(r.bytes)) + ", " + took + ")" +
           (r.replaced ? ", replacing an earlier attempt's" : ""));
}

// One optimizer step over this rank's part of the global batch, in micro-batches. The batch is
// prepared on the host (noise and dropout keyed per sample, as on every device) and moved to the
// compute device; nothing here waits for the device. One MPI all-reduce carries the batch's
// image-noun pairs and every rank's preemption flag.
Trainer::StepResult Trainer::train_step(const data::Batch& batch, int64_t step) {
  const int64_t accumulation = plan_.accumulation;
  MicroBatchSetup setup{plan_.micro, c_.p_drop_text > 0, plan_.backbone.control_conditioning(), device_};
  const models::TransformerSpec& ts = plan_.backbone.transformer;
  if (plan_.backbone.family == "transformer" && ts.masked_training()) {  // MDT: a masked forward besides
    setup.token_mask_ratio = ts.mask_ratio;
    setup.tokens = ts.tokens();
    setup.seed = c_.seed;
  }
  torch::Tensor loss_sum = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  for (int64_t k = 0; k < accumulation; ++k) {
    const MicroBatch m = make_micro_batch(batch, k, step, *objective_, setup);
    const torch::Tensor pred = forward_backbone(*stack_.model, c_.channels_last, m.noised.x_t, m.noised.t_model, m.text,
                                                m.mask, m.controls_or_null());
    const torch::Tensor loss = objective_->loss(pred, m.noised);
    if (m.token_keep.defined()) {
      // MDTv2: the loss of the whole input plus that of the masked one, each pass with its own
      // backward (a unit's gradient is complete, and reduced, when its one backward has run).
      stack_.params->backward(loss, false);
      const torch::Tensor masked = objective_->loss(
          stack_.model->forward_masked(m.noised.x_t, m.noised.t_model, m.text, m.mask, m.controls_or_null(),
                                       m.token_keep),
          m.noised);
      stack_.params->backward(masked, k == accumulation - 1);
      loss_sum += (loss + masked).detach().to(torch::kFloat64);
      continue;
    }
    stack_.params->backward(loss, k == accumulation - 1);
    loss_sum += loss.detach().to(torch::kFloat64);
  }
  StepResult r;
  torch::Tensor loss = loss_sum / static_cast<double>(accumulation);
  stack_.comm->all_reduce(loss, parallel::ReduceOp::kAvg);  // (on a GPU: queued on the device, not waited for)
  const parallel::NamedFigures sums = parallel::NamedFigures{
      {"image_noun_pairs", batch.caption_nouns.sum().item<double>()},
      {"preempt", preemption_requested()
                      ? 1.0
                      : 0.0}}.reduced(rt_.comm(), parallel::HostOp::kSum);
  r.image_noun_pairs = sums["image_noun_pairs"];
  r.preempt = sums["preempt"] > 0;
  // A non-finite loss makes the gradients non-finite, and a non-finite global norm skips the update
  // on every rank (nothing changes); resolve() then counts the step as bad.
  r.pending = {step, loss, stack_.params->step_async(c_.max_grad_norm, 1.0 / static_cast<double>(accumulation))};
  return r;
}

// Reads the pending steps' losses and norms back (on a GPU this waits for the device, and the wait
// counts as training time), then books them in order: a non-finite step is reported, and
// max_bad_steps of them in a row abort the run. On the CPU every step is resolved at once; on a
// GPU at each metrics record and before evaluation, sampling and checkpoints.
void Trainer::resolve() { window_.resolve(c_.max_bad_steps, lr_, progress_.bad_steps); }

void Trainer::evaluate(int64_t step) {
  if (!eval_.held_out()) return;
  resolve();
  const json record = watched("eval", step, [&] { return with_axes(eval_.held_out_loss(eval_model(), step)); });
  metrics_.write(record);
  log_info(Evaluation::describe_held_out(record));
}

void Trainer::sample(int64_t step) {
  if (!eval_.held_out() || c_.sample_count == 0) return;
  resolve();
  watched("sample", step, [&] { eval_.sample_grid(eval_model(), step); });
}

void Trainer::align(int64_t step) {
  if (!eval_.alignment_on()) return;
  resolve();
  const json record = watched("alignment", step, [&] { return with_axes(eval_.alignment(eval_model(), step)); });
  metrics_.write(record);
  log_info(Evaluation::describe_alignment(record));
}

// The metrics record and progress line of the steps since the last one (resolved already).
void Trainer::log_window(int64_t step, Clock::time_point start, int64_t first) {
  const WindowFigures w = window_.close(rt_.comm(), device_);
  const double eta = seconds_since(start) / static_cast<double>(step - first) * static_cast<double>(c_.steps - step);
  const WindowReport r = report_window(
      w, {step, c_.steps, c_.global_batch, rt_.world(), lr_.at(step), static_cast<double>(plan_.train_flops_per_sample),
          peak_tflops_, eta, progress_.bad_steps, progress_.skipped_samples, device_.is_cuda()});
  metrics_.write(with_axes(r.record));
  log_info(r.line);
}

int Trainer::run() {
  watched("start-up: build and resume", 0, [&] {
    build();
    resume();
  });
  if (progress_.step == 0) log_info(describe_run(c_, plan_, parallel::device_name(device_), run_.string()));
  if (progress_.step >= c_.steps && RunDirectory::state(run_) == RunState::kDone) {  // (a complete run: no change)
    log_info("the run is already complete at step " + std::to_string(progress_.step) + " (" + run_.string() +
             "); raise --steps to continue it, or use another --run-dir");
    return 0;
  }
  // The resume checks passed: only now does the run directory change.
  parallel::agree(rt_.comm(), [&] {
    dir_.write_config(s_.config_toml);
    metrics_.start(progress_.step);  // (a fresh start keeps no records of an earlier attempt)
    // Snapshots beyond this point belong to a trajectory this run abandons (or an earlier attempt):
    // set aside, so that a reconstruction never mixes them in.
    if (rt_.rank() == 0)
      for (const auto& d :
           ckpt::supersede_phema_snapshots_after((run_ / "phema").string(), progress_.step * c_.global_batch))
        log_warn("phema snapshot " + d + " is beyond the resumed step " + std::to_string(progress_.step) +
                 " (another trajectory's): moved aside");
  });
  if (progress_.step >= c_.steps) {
    log_info("step " + std::to_string(progress_.step) + " is the last; finishing the run (what is missing of it)");
    catch_up();
    return done();
  }
  catch_up();
  parallel::agree(rt_.comm(),
                  [&] { dir_.clear_markers(); });  // (a stale DONE or PREEMPTED must not mislead the job scripts)
  if (progress_.step == 0) align(0);               // (what an untrained model scores)
  const auto start = Clock::now();
  const int64_t first = progress_.step;
  while (progress_.step < c_.steps) {
    const int64_t step = progress_.step + 1;
    const auto t0 = Clock::now();
    stack_.params->set_lr(lr_.at(step));
    // The averages' decays: the EMA warmed up (early on it would be mostly the random
    // initialisation), each power-function profile's beta at the images seen after this step.
    if (weight_average_count(c_) > 0) stack_.params->set_average_decays(weight_average_decays(c_, step));
    const data::Batch batch = watched("data", step, [&] { return loader_->next(); });
    const StepResult result = watched("step", step, [&] { return train_step(batch, step); });
    progress_.add_step(c_.global_batch, plan_.gflops_per_sample_s1, result.image_noun_pairs, batch.skipped);
    window_.add(result.pending, seconds_since(t0), loader_->take_data_wait_s());
    const bool log_now = step % c_.log_every == 0 || step == c_.steps;
    {
      const parallel::Watchdog::Phase phase(watchdog_, "log", step);
      if (device_.is_cpu() || log_now) resolve();  // (evaluate, sample and checkpoint resolve first too)
      if (log_now) log_window(step, start, first);
    }
    snapshot(step);               // (before the checkpoint: a checkpoint at a step implies its snapshot)
    if (step == c_.steps) break;  // (finish() does the last step's)
    // The checkpoint comes first: a failing evaluation or sampling never costs the step's checkpoint.
    const auto every = [step](int64_t n) { return n > 0 && step % n == 0; };
    if (every(c_.ckpt_every)) checkpoint(step);
    if (eval_.held_out_due(step, c_.steps)) evaluate(step);
    if (every(c_.sample_every)) sample(step);
    if (eval_.alignment_due(step, c_.steps)) align(step);
    // Preemption: any rank's signal (seen by this step's reduction) stops every rank here.
    if (result.preempt) {
      checkpoint(step);
      parallel::agree(rt_.comm(), [&] { dir_.mark_preempted(step, preemption_signal()); });
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
  if (!s_.resume.checkpoint || progress_.step == 0) return;
  const Evaluation::Missing missing = eval_.missing_at(dir_, progress_.step, c_.steps);
  if (phema_snapshot_due(c_, progress_.step) &&
      !fs::exists(run_ / "phema" / ckpt::phema_snapshot_name(progress_.step * c_.global_batch) / "COMPLETE"))
    snapshot(progress_.step);
  if (missing.held_out_loss) evaluate(progress_.step);
  if (missing.samples) sample(progress_.step);
  if (missing.alignment) align(progress_.step);
}

void Trainer::finish() {
  checkpoint(progress_.step);
  evaluate(progress_.step);
  sample(progress_.step);
  align(progress_.step);
  done();
}

int Trainer::done() {
  parallel::agree(rt_.comm(), [&] { dir_.mark_done(progress_.step); });  // (what the job scripts read)
  log_info("done: " + std::to_string(progress_.step) + " steps; " + (run_ / "metrics.jsonl").string());
  return 0;
}

}  // namespace

int train(TrainerSetup setup, parallel::MpiRuntime& rt, const RunDirectory& dir, parallel::Watchdog& watchdog) {
  return Trainer(std::move(setup), rt, dir, watchdog).run();
}

}  // namespace dtrainer::train
