#pragma once
// The alignment score of a run on latent data (train/alignment_eval.h): shards made by dtdata
// encode from the shapes world's images (dtdata synth --kind shapes --png). Their folder's
// encode.json names the encoders it was made with, so the held-out prompts are encoded by the
// same CLIP encoder(s), tokenizer(s) and layer as the training captions, and the sampled latents
// are decoded by the same VAE (or the run's `vae`) before the questions are answered.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/data/caption_encoder.h"
#include "dtrainer/models/autoencoder_kl.h"

namespace dtrainer::train {

struct EncodedData {
  std::string record;  // <dir>/encode.json
  std::string vae;     // the VAE the latents were made with
  data::CaptionEncoderConfig text;
};

// The record of the first of `dirs` that dtdata encode wrote, or nullopt. A record it cannot read
// is an Error naming it.
std::optional<EncodedData> find_encoded_data(const std::vector<std::string>& dirs);

struct LatentAlignment {
  std::function<std::vector<torch::Tensor>(const std::vector<std::string>&)> encode_prompts;
  std::function<torch::Tensor(const torch::Tensor&)> to_pixels;  // latents [B, C, h, w] -> images [B, 3, H, W]
};

// Loads the encoders of `dirs`' record; `vae` (the run's, when set) replaces the recorded VAE.
// Throws Error("alignment", ...) when the data has no record.
LatentAlignment load_latent_alignment(const std::vector<std::string>& dirs, const std::string& vae);

}  // namespace dtrainer::train
