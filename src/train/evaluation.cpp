#include "dtrainer/train/evaluation.h"

#include <cstdio>

#include "dtrainer/core/error.h"
#include "dtrainer/core/remove_tree.h"
#include "dtrainer/dist/agreement.h"
#include "dtrainer/train/train_config.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

std::unique_ptr<AlignmentHook> AlignmentHook::make(const TrainConfig& c, const DataPlan& data, const fs::path& run_dir) {
  if (c.align_every == 0) return nullptr;
  const bool asked = c.align_every > 0;
  if (!data.shapes_world) {
    if (!asked) return nullptr;
    throw Error("align_every", data.pixels ? "the alignment score answers questions about the synthetic shapes world; this data is not it "
                                             "(set align_every = 0)"
                                           : "the alignment score reads pixels, and this run trains on latents: decoding them needs a VAE, "
                                             "which dtrainer does not have yet (set align_every = 0)");
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
  h->root_ = run_dir / "alignment";
  h->image_shape_ = {data.inputs.latent_channels, data.inputs.latent_size, data.inputs.latent_size};
  // (synthetic data is written at start-up: the prompts are read on the first evaluation)
  h->options_.prompts = c.align_prompts;
  h->options_.seed = c.seed;
  h->options_.bootstrap = 1000;
  h->data_ = data;
  return h;
}

bool AlignmentHook::due(int64_t step, int64_t last_step) const {
  return step == 0 || step == last_step || (every_ > 0 && step % every_ == 0);
}

nlohmann::json AlignmentHook::evaluate(int64_t step, const SamplerSetup& sampler, const diffusion::TextPaddingConfig& padding, MPI_Comm comm) const {
  if (prompts_.prompts.empty()) {
    dist::agree(comm, [&] {
      prompts_ = load_alignment_prompts(find_eval_prompts(data_.eval_dirs, data_.train_dirs), data_.inputs.text_dim, data_.caption_tokens,
                                        options_.prompts, /*exactly=*/false);  // (the record says how many)
    });
  }
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  const fs::path dir = root_ / name;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  dist::agree(comm, [&] {
    if (rank == 0) {
      fs::create_directories(root_);
      remove_tree(dir);  // (an interrupted run's: this run recomputes it, alike)
    }
  });
  const nlohmann::json manifest = {{"step", step}, {"guidance", sampler.guidance}, {"steps", sampler.steps}, {"seed", options_.seed},
                                   {"prompts", prompts_.prompts.size()}, {"prompts_file", prompts_.source}, {"images_per_prompt", 1}};
  const AlignmentRun r = evaluate_alignment(prompts_, sampler, padding, image_shape_, options_, dir, manifest, comm);
  nlohmann::json by = nlohmann::json::object();
  for (const auto& [c, v] : r.score.by_category) by[eval::to_string(c)] = v.mean;
  return {{"alignment", r.score.overall.mean},
          {"alignment_interval", {r.score.overall.lo, r.score.overall.hi}},
          {"alignment_chance", r.score.overall.chance},
          {"alignment_by_category", by},
          {"alignment_prompts", r.score.overall.prompts},
          {"alignment_dir", dir.string()}};
}

}  // namespace dtrainer::train
