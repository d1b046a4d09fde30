#include "dtrainer/data/validate.h"

#include <algorithm>
#include <filesystem>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/data/shard_reader.h"

namespace fs = std::filesystem;

namespace dtrainer::data {

std::string ValidationProblem::message() const {
  return file + (image >= 0 ? ": image " + std::to_string(image) : "") + ": " + what;
}

std::vector<std::string> list_shards(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dir, "no such directory");
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == kShardExtension) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  if (out.empty()) throw Error(dir, "contains no shard files (*.h5)");
  return out;
}

ValidationReport validate_shard(const std::string& path) {
  ValidationReport r;
  r.files.push_back(path);
  try {
    ShardReader s(path);
    r.images = s.num_images();
    r.captions = s.num_captions();
    // Latents, a block of images at a time: every value finite.
    const int64_t block = 256;
    for (int64_t i = 0; i < s.num_images(); i += block) {
      const int64_t n = std::min(block, s.num_images() - i);
      const torch::Tensor bad =
          torch::isfinite(s.read_latent_rows(i, n).to(torch::kFloat32)).logical_not().flatten(1).any(1);
      for (int64_t k = 0; k < n; ++k)
        if (bad[k].item<bool>()) r.problems.push_back({path, i + k, "latent has NaN or Inf values"});
    }
    // Token embeddings, caption by caption (the row blocks follow the caption offsets).
    for (int64_t img = 0; img < s.num_images(); ++img)
      for (int64_t j = s.first_caption(img); j < s.first_caption(img) + s.caption_count(img); ++j) {
        if (!torch::isfinite(s.read_tokens(j).to(torch::kFloat32)).all().item<bool>())
          r.problems.push_back({path, img, "caption " + std::to_string(j) + " has NaN or Inf token embeddings"});
        if (s.caption_nouns(j) < 0) r.problems.push_back({path, img, "negative noun count"});
      }
    for (int64_t img = 0; img < s.num_images(); ++img) {
      const auto size = s.original_size(img);
      if (size[0] < 1 || size[1] < 1) r.problems.push_back({path, img, "original_size must be positive"});
    }
  } catch (const Error& e) {
    r.problems.push_back({path, -1, e.where() == path ? e.detail() : e.what()});
  }
  return r;
}

ValidationReport validate_directory(const std::string& dir) {
  ValidationReport all;
  std::vector<int64_t> ref_shape;
  std::string ref_file, ref_space;
  int64_t ref_dim = -1;
  for (const auto& f : list_shards(dir)) {
    ValidationReport r = validate_shard(f);
    all.files.push_back(f);
    all.images += r.images;
    all.captions += r.captions;
    all.problems.insert(all.problems.end(), r.problems.begin(), r.problems.end());
    if (!r.problems.empty()) continue;
    const ShardReader s(f);
    if (ref_file.empty()) {
      ref_file = f;
      ref_shape = s.latent_shape();
      ref_dim = s.header().text_dim;
      ref_space = s.header().latent_space;
      continue;
    }
    auto shape = [](const std::vector<int64_t>& v) {
      return "[" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " + std::to_string(v[2]) + "]";
    };
    if (s.latent_shape() != ref_shape)
      all.problems.push_back(
          {f, -1, "latents are " + shape(s.latent_shape()) + " but " + ref_file + " has " + shape(ref_shape)});
    if (s.header().text_dim != ref_dim)
      all.problems.push_back(
          {f, -1,
           "text_dim " + std::to_string(s.header().text_dim) + " but " + ref_file + " has " + std::to_string(ref_dim)});
    if (s.header().latent_space != ref_space)
      all.problems.push_back(
          {f, -1, "latent_space '" + s.header().latent_space + "' but " + ref_file + " has '" + ref_space + "'"});
  }
  return all;
}

}  // namespace dtrainer::data
