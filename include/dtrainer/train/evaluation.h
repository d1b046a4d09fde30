#pragma once
// The trainer's evaluations, one component: the held-out loss (`eval_every`), the sample grids
// (`sample_every`) and the alignment score (`align_every`). Each returns the fields of its
// metrics record (the trainer adds the step and the N, C, D axes) or writes its files.
//
// The alignment evaluation (`align_every`): at step 0 (what an untrained model scores),
// every `align_every` steps and at the end, sample `align_prompts` held-out prompts with the
// weights the samples use (EMA when kept), write the images under RUN/alignment/step_N (the layout
// dteval writes) and return the record metrics.jsonl gets:
//   {"alignment": score, "alignment_interval": [lo, hi], "alignment_chance": c,
//    "alignment_by_category": {"presence": s, ...}, "alignment_dir": ..., "step", "samples", N, C, D}
// so `fitlaws power --runs ... --metric alignment --x C --frontier max --pick all` fits [S1]'s
// S = a C^b on every evaluation of every run.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <mpi.h>
#include <nlohmann/json.hpp>

#include "dtrainer/data/loader.h"
#include "dtrainer/models/autoencoder_kl.h"
#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/train/alignment_eval.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/latent_alignment.h"
#include "dtrainer/train/run_directory.h"
#include "dtrainer/train/sampling.h"

namespace dtrainer::train {

struct TrainConfig;

class AlignmentHook {
 public:
  // Null when alignment is off (align_every 0, or auto on data that is not the shapes world).
  // Throws Error("align_every") when it is asked for on data it cannot score (data without
  // eval_prompts.json; latents without dtdata encode's record of their encoders), before anything
  // is written.
  static std::unique_ptr<AlignmentHook> make(const TrainConfig& c, const DataPlan& data,
                                             const std::filesystem::path& run_dir);

  bool due(int64_t step, int64_t last_step) const;  // step 0, every align_every, eval_steps, the last
  // Collective. Writes RUN/alignment/step_N (replacing one an interrupted run left) and returns
  // the fields of the metrics record.
  nlohmann::json evaluate(int64_t step, const SamplerSetup& sampler, const diffusion::TextPaddingConfig& padding,
                          MPI_Comm comm) const;

 private:
  AlignmentHook() = default;
  int64_t every_ = 0;
  std::vector<int64_t> steps_;  // eval_steps
  std::filesystem::path root_;
  std::vector<int64_t> image_shape_;
  DataPlan data_;
  mutable AlignmentPrompts prompts_;  // read at the first evaluation (synthetic prompts are written at start-up)
  AlignmentOptions options_;
  std::string vae_;                                // the run's vae (latent data; else the data's record's)
  mutable std::optional<LatentAlignment> latent_;  // latent data: the prompts' encoder and the decoder
};

// What the evaluations read of the model being trained.
struct EvalModel {
  models::Backbone* model = nullptr;
  const diffusion::Objective* objective = nullptr;
  parallel::ShardedParameters* params = nullptr;  // its EMA weights are swapped in for samples and alignment
  torch::Device device = torch::kCPU;
  bool channels_last = false;
};

class Evaluation {
 public:
  Evaluation(const TrainConfig& c, const DataPlan& data, const std::filesystem::path& run_dir,
             std::unique_ptr<AlignmentHook> align, MPI_Comm comm);

  // Reads this rank's share of the held-out batch (up to 64 images) and the sample prompts (the
  // same on every rank), with the training loader's settings; checks the held-out set against
  // the model's inputs. Without eval_data, warns: held-out loss and samples are off.
  void load(const data::LoaderConfig& train_loader, const models::BackboneInputs& inputs);

  bool held_out() const { return held_out_; }
  bool alignment_on() const { return align_ != nullptr; }
  bool alignment_due(int64_t step, int64_t last_step) const { return align_ && align_->due(step, last_step); }
  // The held-out loss: every eval_every steps, at eval_steps and at the last step.
  bool held_out_due(int64_t step, int64_t last_step) const;

  // Collective. The held-out loss over the unit-time grid 0.1 .. 0.9 (fixed noise, nothing
  // dropped): {"eval": true, "eval_loss", "eval_loss_by_t", "eval_samples"}.
  nlohmann::json held_out_loss(const EvalModel& m, int64_t step) const;
  // Collective. samples/step_N.png (held-out images on top, samples for their captions below) or
  // .pt for latents (and, with vae set, the .png decoded), from the EMA weights; rank 0 writes. No-op without held-out
  // data or sample_count 0.
  void sample_grid(const EvalModel& m, int64_t step) const;
  // Collective. The alignment record's fields (see above); requires alignment_on().
  nlohmann::json alignment(const EvalModel& m, int64_t step) const;
  // The progress lines of a held-out and an alignment record (with its "step").
  static std::string describe_held_out(const nlohmann::json& record);
  static std::string describe_alignment(const nlohmann::json& record);

  // Collective. After a resume at `step`: which of the evaluations due at `step` the interrupted
  // run did not write (it stopped between the checkpoint and them). Rank 0 reads the run
  // directory; every rank gets its answer, so all evaluate alike.
  struct Missing {
    bool held_out_loss = false, samples = false, alignment = false;
  };
  Missing missing_at(const RunDirectory& dir, int64_t step, int64_t last_step) const;

 private:
  SamplerSetup sampler(const EvalModel& m) const;
  const TrainConfig& c_;
  DataPlan data_;
  std::filesystem::path run_;
  std::unique_ptr<AlignmentHook> align_;
  MPI_Comm comm_;
  int rank_ = 0, world_ = 1;
  data::Batch eval_batch_, prompts_;
  bool held_out_ = false;
  mutable models::AutoencoderKL vae_{nullptr};  // rank 0, with vae set: decodes latent samples
};

}  // namespace dtrainer::train
