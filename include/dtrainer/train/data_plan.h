#pragma once
// The data a run trains and evaluates on, planned before anything is written: the training and
// held-out directories (synthetic:shapes resolved to the run directory's data/), the model's
// inputs from the first training shard (or the synthetic set's known shape), and every data set
// checked against them — the same latent shape, text width and text encoder — so a mismatch is an
// error at start-up naming the set, not a failure at the first evaluation.

#include <filesystem>
#include <string>
#include <vector>

#include "dtrainer/models/backbone.h"

namespace dtrainer::data {
class Loader;
}

namespace dtrainer::train {

struct TrainConfig;

// The synthetic shapes dataset's text width (its shape is known without generating it).
constexpr int64_t kSyntheticTextDim = 256;

struct DataPlan {
  std::vector<std::string> train_dirs, eval_dirs;
  bool found = true;    // shapes known from the data (false: dry run without data)
  bool pixels = false;  // pixel-space data: samples become PNG grids
  models::BackboneInputs inputs;
  int64_t caption_tokens = 77;  // the longest caption the data's encoder wrote (its shards' max_tokens)
  bool shapes_world = false;    // the synthetic shapes world: alignment can be scored (eval_prompts.json)
};

// Throws Error naming the data set (`data DIR`, `eval_data DIR`) whose shapes or encoder differ.
DataPlan plan_data(const TrainConfig& c, const std::filesystem::path& run_dir);

// The loader's data fit the model's inputs (latent shape, text width), else Error naming `field`
// and the data sets.
void check_data_fits(const data::Loader& loader, const models::BackboneInputs& inputs,
                     const std::vector<std::string>& dirs, const char* field);

// The `vae` of decoded samples fits the data: latent-space data (pixels need no decoding) with the
// VAE's latent channels; on rank 0 its weights load (every tensor named and shaped). Else
// Error("vae", ...), at start-up, before the run directory changes.
void check_sample_vae(const std::string& vae, const DataPlan& data, const models::BackboneInputs& inputs, int rank);

}  // namespace dtrainer::train
