#include "dtrainer/data/synthesize.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/rng.h"
#include "dtrainer/data/png_image.h"
#include "dtrainer/data/shapes_scene.h"
#include "dtrainer/data/toy_text_encoder.h"

namespace fs = std::filesystem;

namespace dtrainer::data {
namespace {

std::string shard_name(int64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05lld.h5", static_cast<long long>(index));
  return buf;
}

void prepare_dir(const SynthConfig& c) {
  if (c.out_dir.empty()) throw Error("--out", "an output directory is required");
  std::error_code ec;
  fs::create_directories(c.out_dir, ec);
  if (ec) throw Error(c.out_dir, "cannot create directory: " + ec.message());
  for (const auto& e : fs::directory_iterator(c.out_dir)) {
    if (e.path().extension() != kShardExtension) continue;
    if (!c.force)
      throw Error(c.out_dir, "already contains shards (" + e.path().filename().string() + "); use --force to replace");
    fs::remove(e.path());
  }
}

void write_json_atomically(const std::string& path, const nlohmann::json& j) {
  write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace

SynthReport synthesize(const SynthConfig& c) {
  if (c.kind != "shapes" && c.kind != "latents")
    throw Error("--kind", "expected shapes or latents, got '" + c.kind + "'");
  if (c.images < 1) throw Error("--images", "must be at least 1");
  if (c.images_per_shard < 1) throw Error("--images-per-shard", "must be at least 1");
  if (c.kind == "latents" && (c.captions < 1 || c.max_tokens < 8))
    throw Error("--captions", "need >= 1 caption and max_tokens >= 8");
  if (c.png && c.kind != "shapes") throw Error("--png", "writes the shapes world's images (--kind shapes)");
  prepare_dir(c);
  const bool shapes = c.kind == "shapes";
  // One text encoder for every dataset, whatever its seed: a run's training and held-out sets
  // (synthesized with different seeds) must encode the same words alike, as one frozen CLIP would.
  const ToyTextEncoder encoder(c.text_dim, c.max_tokens);
  ShardHeader header;
  header.latent_space = shapes ? "pixels" : "sdxl-vae";
  header.latent_encoder = shapes ? "none" : "synthetic-random";
  header.text_encoder = shapes ? ToyTextEncoder::name() : "synthetic-random";
  header.text_dim = c.text_dim;
  header.max_tokens = c.max_tokens;
  SynthReport report;
  for (int64_t first = 0, shard = 0; first < c.images; first += c.images_per_shard, ++shard) {
    ShardBuilder builder(header, {shapes ? "synthetic-shapes" : "synthetic-latents"});
    const int64_t last = std::min(c.images, first + c.images_per_shard);
    for (int64_t i = first; i < last; ++i) {
      StreamRng rng(stream_key(c.seed, RngPurpose::kSynthesis, 0, i));
      std::vector<CaptionRecord> caps;
      if (shapes) {
        const ShapesScene scene = random_scene(rng);
        if (c.png) {  // (the images and captions a real dataset would have, for dtdata encode)
          char stem[32];
          std::snprintf(stem, sizeof stem, "%05lld", static_cast<long long>(i));
          write_png((fs::path(c.out_dir) / (std::string(stem) + ".png")).string(), render_scene(scene, c.image_size));
          std::string lines;
          for (const auto& text : scene_captions(scene)) lines += text + "\n";
          write_file_atomic(fs::path(c.out_dir) / (std::string(stem) + ".txt"), lines);
          report.captions += static_cast<int64_t>(scene_captions(scene).size());
          continue;
        }
        for (const auto& text : scene_captions(scene))
          caps.push_back({text, encoder.encode(text), ToyTextEncoder::count_nouns(text)});
        builder.add_image(render_scene(scene, c.image_size), caps, c.image_size, c.image_size);
      } else {
        torch::manual_seed(static_cast<uint64_t>(stream_key(c.seed, RngPurpose::kSynthesis, 1, i) >> 1));
        for (int64_t k = 0; k < c.captions; ++k) {
          const int64_t L = 8 + static_cast<int64_t>(rng.uniform() * (c.max_tokens - 7));
          caps.push_back({"", torch::randn({L, c.text_dim}), 1 + static_cast<int64_t>(rng.uniform() * 8)});
        }
        builder.add_image(torch::randn({c.latent_channels, c.latent_size, c.latent_size}), caps, 8 * c.latent_size,
                          8 * c.latent_size);
      }
      report.captions += static_cast<int64_t>(caps.size());
    }
    report.images += last - first;
    if (c.png) continue;
    const std::string path = (fs::path(c.out_dir) / shard_name(shard)).string();
    write_shard(path, builder.build(), c.write);
    report.shards.push_back(path);
  }
  if (shapes) {
    nlohmann::json prompts = nlohmann::json::array();
    for (int64_t i = 0; i < c.eval_prompts; ++i) {
      StreamRng rng(stream_key(c.seed, RngPurpose::kSynthesis, 2, i));  // a stream the training images never use
      prompts.push_back(scene_ground_truth(random_scene(rng)));
    }
    report.eval_prompts = (fs::path(c.out_dir) / "eval_prompts.json").string();
    write_json_atomically(report.eval_prompts, {{"version", 1}, {"image_size", c.image_size}, {"prompts", prompts}});
  }
  return report;
}

}  // namespace dtrainer::data
