#pragma once
// The alignment evaluation of a model (#20): sample images for held-out prompts of the shapes
// world, write them as PNGs in the layout the public evaluators read (eval/sample_layout.h), then
// answer each prompt's questions on the images written and score them (eval/alignment.h). One
// component for `dteval alignment` and the trainer's `align_every`.
//
// Rank invariance: image i of prompt p starts from noise keyed by (seed, p x K + i), and the images
// go through the model in fixed chunks of `batch` consecutive ids, chunk j on rank j mod R; so
// every image is computed alike whatever the rank count (bitwise, at one thread per rank). Every
// rank samples its share, and every rank makes the same number of forward passes (a rank short of
// a chunk in the last round repeats one and discards it), since a zero3 forward pass is a
// collective; rank 0 scores the images read back from the files, so every number
// comes from an image a person can open.

#include <cstdint>
#include <functional>
#include <filesystem>
#include <string>
#include <vector>

#include <mpi.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "dtrainer/diffusion/text_padding.h"
#include "dtrainer/eval/alignment.h"
#include "dtrainer/train/sampling.h"

namespace dtrainer::train {

struct AlignmentOptions {
  int64_t prompts = 0;            // the first N prompts of eval_prompts.json (0: all)
  int64_t images_per_prompt = 1;  // K
  int64_t batch = 8;              // images per forward pass (fixed: see above)
  uint64_t seed = 0;              // starting noise, and the bootstrap
  int64_t bootstrap = 1000;
};

// The held-out prompts, each encoded as the run's training captions are (the toy text encoder of
// the shapes world at the data's width), and its questions.
struct AlignmentPrompts {
  std::string source;                   // eval_prompts.json
  std::vector<nlohmann::json> prompts;  // the chosen entries
  std::vector<torch::Tensor> tokens;    // [L, D] per prompt
  std::vector<std::vector<eval::Question>> questions;
};

// Reads `path` (eval_prompts.json), keeps the first `count` (0: all; with `exactly`, more than the
// file holds is an error, else all it holds), encodes them as the data's captions were (width
// `text_dim`, cut at `max_tokens`: the shards' header). Throws Error naming the file and the prompt
// whose structure is missing.
// `encode` (latent data: train/latent_alignment.h) replaces the toy encoder: the prompts' states.
AlignmentPrompts load_alignment_prompts(
    const std::string& path, int64_t text_dim, int64_t max_tokens, int64_t count, bool exactly,
    const std::function<std::vector<torch::Tensor>(const std::vector<std::string>&)>& encode = nullptr);

// Where the prompts of a run's data are: eval_prompts.json of its first held-out set, else of its
// first training set. Throws Error when there is none (data that is not the shapes world).
std::string find_eval_prompts(const std::vector<std::string>& eval_dirs, const std::vector<std::string>& train_dirs);

struct AlignmentRun {
  eval::AlignmentScore score;  // on every rank
  std::filesystem::path dir;   // where the images and alignment.json are
};

// Collective over `comm`. Samples every image of this rank's share with `sampler` (model, device,
// steps, guidance), of `image_shape` ([C, H, W]: pixels in [-1, 1], or latents that `to_pixels`
// decodes, a batch at a time); writes the layout into `out` (created here; it must not exist)
// through `out`.partial, renamed when complete; `manifest` goes into manifest.json. Failures on any
// rank are every rank's (CollectiveError), and leave nothing behind.
AlignmentRun evaluate_alignment(const AlignmentPrompts& prompts, const SamplerSetup& sampler,
                                const diffusion::TextPaddingConfig& padding, const std::vector<int64_t>& image_shape,
                                const AlignmentOptions& options, const std::filesystem::path& out,
                                const nlohmann::json& manifest, MPI_Comm comm,
                                const std::function<torch::Tensor(const torch::Tensor&)>& to_pixels = nullptr);

}  // namespace dtrainer::train
