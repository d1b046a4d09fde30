#include "dtrainer/train/data_plan.h"

#include <c10/util/ArrayRef.h>
#include <c10/util/StringUtil.h>

#include "dtrainer/core/error.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/data/synthesize.h"
#include "dtrainer/data/toy_text_encoder.h"
#include "dtrainer/data/validate.h"
#include "dtrainer/models/autoencoder_kl.h"
#include "dtrainer/models/pretrained_folder.h"
#include "dtrainer/train/latent_alignment.h"
#include "dtrainer/train/train_config.h"

namespace fs = std::filesystem;

namespace dtrainer::train {
namespace {

// Every data set of a run (training mixes, held-out sets) must take the same model: checked when
// the run is planned, not at the first evaluation (each loader checks all of its own shards when
// it opens them). `source` says where the expected shapes come from.
void check_data_sets(const DataPlan& p, bool synthetic, const std::vector<int64_t>& shape, int64_t text_dim,
                     const std::string& text_encoder, const std::string& source) {
  const auto fmt = [](const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); };
  std::vector<std::pair<std::string, std::string>> sets;
  for (const auto& d : p.train_dirs) sets.emplace_back("data", d);
  for (const auto& d : p.eval_dirs) sets.emplace_back("eval_data", d);
  std::error_code ec;
  for (const auto& [field, d] : sets) {
    if (!fs::is_directory(d, ec)) {
      if (!synthetic) throw Error(field + " " + d, "does not exist");
      continue;  // (synthesized at start-up, with the shapes expected)
    }
    const auto files = data::list_shards(d);
    if (files.empty()) throw Error(field + " " + d, "no shards (*.h5) in the data directory");
    const data::ShardReader r(files.front());
    if (r.header().text_encoder == "dtrainer-toy-text-v1")
      throw Error(field + " " + d,
                  "was synthesized by an older dtrainer whose toy text encoder depended on the dataset's seed (a "
                  "held-out set's captions were encoded unlike the training set's): delete it and run again to "
                  "synthesize it anew");
    if (r.header().text_encoder != text_encoder)
      throw Error(field + " " + d, "text was encoded by '" + r.header().text_encoder + "', the training data's by '" +
                                       text_encoder + "': every data set of a run needs the same text encoder");
    if (r.latent_shape() != shape)
      throw Error(field + " " + d, "latents are " + fmt(r.latent_shape()) + " but the model takes " + fmt(shape) +
                                       " (" + source +
                                       "): every data set of a run must have the training data's shapes");
    if (r.header().text_dim != text_dim)
      throw Error(field + " " + d, "text embeddings are " + std::to_string(r.header().text_dim) +
                                       " wide but the model's context is " + std::to_string(text_dim) + " (" + source +
                                       ")");
  }
}

}  // namespace

// The data as stored (plan_data adds what the loader changes: crops).
static DataPlan plan_stored_data(const TrainConfig& c, const fs::path& run_dir) {
  DataPlan p;
  bool synthetic = false;
  for (const auto& d : c.data) {
    if (d == "synthetic:shapes") {
      synthetic = true;
      // (size and count in the name: a run with other synthetic settings never reuses these)
      p.train_dirs.push_back(
          (run_dir / "data" /
           ("shapes-" + std::to_string(c.synthetic_image_size) + "px-" + std::to_string(c.synthetic_images)))
              .string());
    } else {
      p.train_dirs.push_back(d);
    }
  }
  p.eval_dirs = c.eval_data;
  if (p.eval_dirs.empty() && synthetic)
    p.eval_dirs.push_back(
        (run_dir / "data" / ("shapes-" + std::to_string(c.synthetic_image_size) + "px-eval")).string());
  if (synthetic && c.data.size() == 1) {
    p.pixels = true;
    p.inputs = {3, c.synthetic_image_size, kSyntheticTextDim, c.max_tokens};
    p.caption_tokens = data::SynthConfig{}.max_tokens;  // (what the trainer synthesizes with)
    p.shapes_world = true;
    check_data_sets(p, true, {3, c.synthetic_image_size, c.synthetic_image_size}, kSyntheticTextDim,
                    data::ToyTextEncoder::name(),
                    "synthetic:shapes at synthetic_image_size " + std::to_string(c.synthetic_image_size));
    return p;
  }
  // Real data: the first shard's header and shapes decide.
  const std::string& dir = p.train_dirs.front();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    p.found = false;
    return p;
  }
  const auto shards = data::list_shards(dir);
  if (shards.empty()) throw Error(dir, "no shards (*.h5) in the data directory");
  data::ShardReader reader(shards.front());
  p.pixels = reader.header().latent_space == "pixels";
  const auto shape = reader.latent_shape();
  if (shape.size() != 3 || shape[1] != shape[2]) throw Error(shards.front(), "latents must be [C, H, H]");
  p.inputs = {shape[0], shape[1], reader.header().text_dim, c.max_tokens};
  p.caption_tokens = reader.header().max_tokens;
  p.shapes_world = p.pixels && reader.header().text_encoder == data::ToyTextEncoder::name();
  if (!p.pixels && find_encoded_data(p.train_dirs)) {  // (shapes images through dtdata encode: scored decoded)
    for (const auto& d : p.eval_dirs.empty() ? p.train_dirs : p.eval_dirs)
      p.shapes_world = p.shapes_world || fs::exists(fs::path(d) / "eval_prompts.json", ec);
    for (const auto& d : p.train_dirs)
      p.shapes_world = p.shapes_world || fs::exists(fs::path(d) / "eval_prompts.json", ec);
  }
  check_data_sets(p, synthetic, shape, reader.header().text_dim, reader.header().text_encoder,
                  "the shape of " + shards.front());
  return p;
}

DataPlan plan_data(const TrainConfig& c, const fs::path& run_dir) {
  DataPlan p = plan_stored_data(c, run_dir);
  if (c.crop_scale.empty()) return p;
  // [S2] crop-scale: the model takes the crops, resized (the loader takes them from pixel-space data).
  if (p.found && !p.pixels)
    throw Error("crop_scale", p.train_dirs.front() +
                                  " holds latents: crops are taken on the fly from pixel-space data only; latent "
                                  "data is cropped when it is encoded (docs/TRAINING.md \"Stages\")");
  if (c.crop_size > 0) p.inputs.latent_size = c.crop_size;
  return p;
}

void check_data_fits(const data::Loader& loader, const models::BackboneInputs& in, const std::vector<std::string>& dirs,
                     const char* field) {
  const auto& shape = loader.latent_shape();
  const std::vector<int64_t> want = {in.latent_channels, in.latent_size, in.latent_size};
  std::string where = std::string(field) + " " + (dirs.empty() ? "" : dirs.front());
  for (size_t i = 1; i < dirs.size(); ++i) where += ", " + dirs[i];
  auto fmt = [](const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); };
  if (shape != want)
    throw Error(where, "latents are " + fmt(shape) + " but the model takes " + fmt(want) +
                           " (from the training data): every data set of a run must have the training data's shapes");
  if (loader.text_dim() != in.text_dim)
    throw Error(where, "text embeddings are " + std::to_string(loader.text_dim()) +
                           " wide but the model's context is " + std::to_string(in.text_dim));
}

void check_sample_vae(const std::string& vae, const DataPlan& data, const models::BackboneInputs& inputs, int rank) {
  if (data.pixels)
    throw Error("vae", "the data is pixel-space: its samples are PNG already (remove vae = \"" + vae + "\")");
  try {
    const models::PretrainedFolder folder =
        models::find_pretrained_folder(vae, "diffusion_pytorch_model.safetensors", "a diffusers AutoencoderKL folder");
    const models::AutoencoderKLConfig config = models::parse_autoencoder_config(folder.config);
    if (data.found && config.latent_channels != inputs.latent_channels)
      throw Error(vae, "has " + std::to_string(config.latent_channels) + " latent channels, the data's latents " +
                           std::to_string(inputs.latent_channels) + " (the data was encoded with another VAE?)");
    if (rank == 0) models::load_autoencoder(vae);  // (every tensor there, of its shape)
  } catch (const Error& e) {
    throw Error("vae", e.what());
  }
}

}  // namespace dtrainer::train
