#pragma once
// The trainer's alignment evaluation (`align_every`): at step 0 (what an untrained model scores),
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

#include <mpi.h>
#include <nlohmann/json.hpp>

#include "dtrainer/train/alignment_eval.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/sampling.h"

namespace dtrainer::train {

struct TrainConfig;

class AlignmentHook {
 public:
  // Null when alignment is off (align_every 0, or auto on data that is not the shapes world).
  // Throws Error("align_every") when it is asked for on data it cannot score (latents: no VAE
  // decoder yet; data without eval_prompts.json), before anything is written.
  static std::unique_ptr<AlignmentHook> make(const TrainConfig& c, const DataPlan& data, const std::filesystem::path& run_dir);

  bool due(int64_t step, int64_t last_step) const;  // step 0, every align_every, the last
  // Collective. Writes RUN/alignment/step_N (replacing one an interrupted run left) and returns
  // the fields of the metrics record.
  nlohmann::json evaluate(int64_t step, const SamplerSetup& sampler, const diffusion::TextPaddingConfig& padding, MPI_Comm comm) const;

 private:
  AlignmentHook() = default;
  int64_t every_ = 0;
  std::filesystem::path root_;
  std::vector<int64_t> image_shape_;
  DataPlan data_;
  mutable AlignmentPrompts prompts_;  // read at the first evaluation (synthetic prompts are written at start-up)
  AlignmentOptions options_;
};

}  // namespace dtrainer::train
