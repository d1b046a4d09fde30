#include "dtrainer/data/encode_dataset.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/core/dir_lock.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/format_duration.h"
#include "dtrainer/core/rng.h"
#include "dtrainer/data/caption_encoder.h"
#include "dtrainer/data/caption_nouns.h"
#include "dtrainer/data/crop_scale.h"
#include "dtrainer/data/image_file.h"
#include "dtrainer/diffusion/sampler.h"
#include "dtrainer/models/autoencoder_kl.h"
#include "dtrainer/models/clip_text_model.h"
#include "dtrainer/models/clip_tokenizer.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/host_collectives.h"

namespace dtrainer::data {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Item {
  std::string image;
  std::vector<std::string> captions;  // the original first
  std::vector<int64_t> nouns;         // one per caption; empty: counted by the heuristic
};

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::vector<Item> items_of_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dir, "is not a readable folder (--images)");
  std::vector<std::string> images;
  fs::directory_iterator it(dir, ec);
  if (ec) throw Error(dir, "cannot be listed: " + ec.message());
  for (const auto& e : it)
    if (e.is_regular_file(ec) && has_image_extension(e.path().string())) images.push_back(e.path().string());
  std::sort(images.begin(), images.end());
  if (images.empty()) throw Error(dir, "has no .png, .jpg or .jpeg image");
  std::vector<Item> items;
  for (const auto& path : images) {
    const fs::path txt = fs::path(path).replace_extension(".txt");
    if (!fs::exists(txt, ec))
      throw Error(path, "has no caption file " + txt.filename().string() +
                            " beside it (one caption per line, the original first; or give a --list file)");
    Item item{path, {}, {}};
    std::istringstream in(read_file(txt));
    for (std::string line; std::getline(in, line);)
      if (!trim(line).empty()) item.captions.push_back(trim(line));
    if (item.captions.empty()) throw Error(txt.string(), "has no caption (an empty file)");
    items.push_back(std::move(item));
  }
  return items;
}

std::vector<Item> items_of_list(const std::string& file) {
  std::istringstream in(read_file(file));
  const fs::path base = fs::path(file).parent_path();
  std::vector<Item> items;
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (trim(line).empty()) continue;
    const std::string where = file + ":" + std::to_string(number);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(where, std::string("is not a JSON object: ") + e.what());
    }
    if (!j.is_object() || !j.contains("image") || !j["image"].is_string() || !j.contains("caption") ||
        !j["caption"].is_string())
      throw Error(where, "needs \"image\" (a path) and \"caption\" (a string)");
    Item item;
    const fs::path image = j["image"].get<std::string>();
    item.image = (image.is_absolute() ? image : base / image).string();
    item.captions.push_back(j["caption"].get<std::string>());
    if (j.contains("synthetic_captions")) {
      if (!j["synthetic_captions"].is_array()) throw Error(where, "\"synthetic_captions\" must be a list of strings");
      for (const auto& c : j["synthetic_captions"]) {
        if (!c.is_string()) throw Error(where, "\"synthetic_captions\" must be a list of strings");
        item.captions.push_back(c.get<std::string>());
      }
    }
    if (j.contains("nouns")) {
      const auto& n = j["nouns"];
      if (!n.is_array() || n.size() != item.captions.size())
        throw Error(where, "\"nouns\" must list one count per caption (" + std::to_string(item.captions.size()) + ")");
      for (const auto& v : n) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0) throw Error(where, "\"nouns\" must be counts >= 0");
        item.nouns.push_back(v.get<int64_t>());
      }
    }
    items.push_back(std::move(item));
  }
  if (items.empty()) throw Error(file, "lists no item");
  return items;
}

std::string shard_name(int64_t s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05lld", static_cast<long long>(s));
  return buf;
}

// What must be the same for every shard of one output folder.
json settings_of(const EncodeConfig& c, const std::string& text_layer, const std::string& latent_space) {
  auto canonical = [](const std::string& p) { return p.empty() ? p : fs::weakly_canonical(p).string(); };
  return {{"images", canonical(c.images_dir)},
          {"list", canonical(c.list_file)},
          {"vae", canonical(c.vae_dir)},
          {"text_encoder", canonical(c.text_encoder_dir)},
          {"text_encoder_2", canonical(c.text_encoder_2_dir)},
          {"text_layer", text_layer},
          {"latent_space", latent_space},
          {"resolution", c.resolution},
          {"crop", c.crop},
          {"crop_scale", {c.crop_scale_lo, c.crop_scale_hi}},
          {"crops_per_image", c.crops_per_image},
          {"sample_latents", c.sample_latents},
          {"images_per_shard", c.images_per_shard},
          {"seed", c.seed},
          {"dtype", c.dtype},
          {"latent_dtype", to_string(c.write.latent_dtype)},
          {"token_dtype", to_string(c.write.token_dtype)}};
}

void check_config(const EncodeConfig& c) {
  if (c.images_dir.empty() == c.list_file.empty()) throw Error("--images / --list", "give exactly one of them");
  if (c.out_dir.empty()) throw Error("--out", "is required");
  if (c.vae_dir.empty()) throw Error("--vae", "is required (a diffusers AutoencoderKL folder)");
  if (c.text_encoder_dir.empty()) throw Error("--text-encoder", "is required (a CLIP text encoder folder)");
  if (c.resolution < 8) throw Error("--resolution", "must be at least 8 pixels");
  if (c.crop != "center" && c.crop != "random")
    throw Error("--crop", "expected center or random, got '" + c.crop + "'");
  const bool scale = c.crop_scale_lo != 0 || c.crop_scale_hi != 0;
  if (scale && !(c.crop_scale_lo > 0 && c.crop_scale_lo <= c.crop_scale_hi && c.crop_scale_hi <= 1))
    throw Error("--crop-scale", "needs 0 < LO <= HI <= 1 (fractions of the shorter side)");
  if (c.crops_per_image < 1) throw Error("--crops-per-image", "must be at least 1");
  if (c.crops_per_image > 1 && !scale)
    throw Error("--crops-per-image", "needs --crop-scale (without it every crop of an image is the same)");
  if (c.images_per_shard < 1) throw Error("--images-per-shard", "must be at least 1");
  if (c.batch < 1) throw Error("--batch", "must be at least 1");
  if (c.dtype != "fp32" && c.dtype != "bf16") throw Error("--dtype", "expected fp32 or bf16, got '" + c.dtype + "'");
}

std::string default_tokenizer(const std::string& encoder_dir, const char* sibling) {
  if (fs::exists(fs::path(encoder_dir) / "vocab.json")) return encoder_dir;
  return (fs::path(encoder_dir).lexically_normal().parent_path() / sibling).string();
}

// A square crop of `image` [3, H, W], resized to `res`; top / left in the resized coordinates.
struct Crop {
  torch::Tensor pixels;
  int64_t top = 0, left = 0;
};

Crop take_crop(const torch::Tensor& image, const EncodeConfig& c, int64_t item, int64_t k) {
  namespace F = torch::nn::functional;
  const int64_t H = image.size(1), W = image.size(2), res = c.resolution;
  if (c.crop_scale_lo > 0) {
    const CropBox box = draw_crop(c.seed, k, item, H, W, c.crop_scale_lo, c.crop_scale_hi);
    const double f = static_cast<double>(res) / static_cast<double>(box.side);
    return {crop_resize(image, box, res), std::llround(box.top * f), std::llround(box.left * f)};
  }
  const double f = static_cast<double>(res) / static_cast<double>(std::min(H, W));
  const int64_t h = std::max<int64_t>(res, std::llround(H * f)), w = std::max<int64_t>(res, std::llround(W * f));
  torch::Tensor resized = image;
  if (h != H || w != W)
    resized = F::interpolate(image.unsqueeze(0), F::InterpolateFuncOptions()
                                                     .size(std::vector<int64_t>{h, w})
                                                     .mode(torch::kBilinear)
                                                     .align_corners(false)
                                                     .antialias(f < 1))
                  .squeeze(0);
  int64_t top = (h - res) / 2, left = (w - res) / 2;
  if (c.crop == "random") {
    StreamRng rng(stream_key(c.seed, RngPurpose::kEncode, static_cast<uint64_t>(item), 0));
    top = static_cast<int64_t>(rng.uniform() * static_cast<double>(h - res + 1));
    left = static_cast<int64_t>(rng.uniform() * static_cast<double>(w - res + 1));
  }
  return {resized.narrow(1, top, res).narrow(2, left, res).clamp(-1, 1).contiguous(), top, left};
}

}  // namespace

EncodeSummary encode_dataset(const EncodeConfig& c, MPI_Comm comm,
                             const std::function<void(const std::string&)>& progress) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  std::vector<Item> items;
  models::AutoencoderKL vae{nullptr};
  std::unique_ptr<CaptionEncoder> text;
  CaptionEncoderConfig text_config;
  std::string text_layer;
  ShardHeader header;
  std::unique_ptr<DirectoryLock> lock;
  // 1. Everything that can be refused, on every rank, before anything is written.
  parallel::agree(comm, [&] {
    check_config(c);
    items = c.list_file.empty() ? items_of_folder(c.images_dir) : items_of_list(c.list_file);
    const torch::ScalarType dt = c.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    vae = models::load_autoencoder(c.vae_dir, dt);
    if (c.resolution % vae->config().downsampling())
      throw Error("--resolution", std::to_string(c.resolution) + " is not a multiple of the VAE's downsampling " +
                                      std::to_string(vae->config().downsampling()));
    text_config.text_encoders = {c.text_encoder_dir};
    text_config.tokenizers = {c.tokenizer_dir.empty() ? default_tokenizer(c.text_encoder_dir, "tokenizer")
                                                      : c.tokenizer_dir};
    if (!c.text_encoder_2_dir.empty()) {
      text_config.text_encoders.push_back(c.text_encoder_2_dir);
      text_config.tokenizers.push_back(
          c.tokenizer_2_dir.empty() ? default_tokenizer(c.text_encoder_2_dir, "tokenizer_2") : c.tokenizer_2_dir);
    }
    text_layer =
        c.text_layer == "auto" ? (text_config.text_encoders.size() > 1 ? "penultimate" : "last") : c.text_layer;
    text_config.layer = text_layer;
    text_config.dtype = c.dtype;
    text = std::make_unique<CaptionEncoder>(text_config);
    const double sf = vae->config().scaling_factor;
    header.latent_space = !c.latent_space.empty()         ? c.latent_space
                          : std::abs(sf - 0.13025) < 1e-9 ? "sdxl-vae"
                          : std::abs(sf - 0.18215) < 1e-9 ? "sd-vae"
                                                          : "vae";
    header.latent_encoder = fs::path(c.vae_dir).lexically_normal().string();
    header.text_encoder = fs::path(c.text_encoder_dir).lexically_normal().string() +
                          (c.text_encoder_2_dir.empty() ? "" : " + " + c.text_encoder_2_dir) + " (" + text_layer + ")";
    header.text_dim = text->text_dim();
    header.max_tokens = text->max_tokens();
    // Rank 0 owns the folder: the lock, and the settings every shard of it was made with.
    if (rank == 0) {
      fs::create_directories(fs::path(c.out_dir) / "encode");
      lock = std::make_unique<DirectoryLock>(c.out_dir, "dtdata encode");
      remove_stale_temporaries(c.out_dir);
      json settings = settings_of(c, text_layer, header.latent_space);
      settings["tokenizers"] = text_config.tokenizers;
      for (auto& t : settings["tokenizers"]) t = fs::weakly_canonical(t.get<std::string>()).string();
      const fs::path recorded = fs::path(c.out_dir) / "encode.json";
      if (fs::exists(recorded)) {
        const json before = json::parse(read_file(recorded));
        for (const auto& [key, value] : settings.items())
          if (!before.contains(key) || before[key] != value)
            throw Error(recorded.string(), "records " + key + " = " +
                                               (before.contains(key) ? before[key].dump() : "none") +
                                               ", this run has " + value.dump() +
                                               ": the shards of one folder must be encoded alike (another --out, "
                                               "or the same settings)");
      } else {
        write_file_atomic(recorded, settings.dump(2) + "\n");
      }
      // Held-out prompts beside the images (dtdata synth --kind shapes --png) go with the shards: the
      // alignment score of a run on them reads them there.
      const fs::path prompts =
          fs::path(c.list_file.empty() ? c.images_dir : fs::path(c.list_file).parent_path().string()) /
          "eval_prompts.json";
      if (fs::exists(prompts)) write_file_atomic(fs::path(c.out_dir) / "eval_prompts.json", read_file(prompts));
    }
  });

  const int64_t N = static_cast<int64_t>(items.size()), P = c.images_per_shard, shards = (N + P - 1) / P;
  EncodeSummary summary;
  summary.items = N;
  summary.shards = shards;
  const fs::path records = fs::path(c.out_dir) / "encode";
  std::vector<int64_t> mine, done_before;
  for (int64_t s = rank; s < shards; s += world) {
    if (fs::exists(records / (shard_name(s) + ".json")))
      done_before.push_back(s);
    else
      mine.push_back(s);
  }
  // 2. Each rank its shards, each written whole and then recorded.
  int64_t written = 0, images = 0;
  parallel::agree(comm, [&] {
    const auto start = std::chrono::steady_clock::now();
    for (size_t n = 0; n < mine.size(); ++n) {
      const int64_t s = mine[n], first = s * P, last = std::min(N, first + P);
      ShardBuilder builder(header, {c.list_file.empty() ? fs::path(c.images_dir).filename().string()
                                                        : fs::path(c.list_file).stem().string()});
      json skipped = json::array();
      // Images: crops of every readable item, encoded in batches.
      struct Pending {
        int64_t item, k;
        Crop crop;
        int64_t orig_h, orig_w;
      };
      std::vector<Pending> pending;
      for (int64_t i = first; i < last; ++i) {
        torch::Tensor image;
        try {
          image = read_image(items[i].image);
        } catch (const Error& err) {
          skipped.push_back({{"image", items[i].image}, {"reason", err.detail()}});
          continue;
        }
        for (int64_t k = 0; k < c.crops_per_image; ++k)
          pending.push_back({i, k, take_crop(image, c, i, k), image.size(1), image.size(2)});
      }
      std::vector<std::string> texts;
      for (const auto& p : pending)
        if (p.k == 0) texts.insert(texts.end(), items[p.item].captions.begin(), items[p.item].captions.end());
      const std::vector<torch::Tensor> states = text->encode(texts, c.batch);
      size_t next_caption = 0;
      std::vector<CaptionRecord> captions;
      for (size_t b = 0; b < pending.size(); b += static_cast<size_t>(c.batch)) {
        const size_t stop = std::min(pending.size(), b + static_cast<size_t>(c.batch));
        std::vector<torch::Tensor> pixels, noise;
        for (size_t j = b; j < stop; ++j) pixels.push_back(pending[j].crop.pixels);
        const torch::Tensor batch = torch::stack(pixels);
        torch::Tensor z;
        if (c.sample_latents) {
          const auto f = vae->config().downsampling();
          for (size_t j = b; j < stop; ++j)
            noise.push_back(
                diffusion::initial_noise({vae->config().latent_channels, c.resolution / f, c.resolution / f},
                                         stream_key(c.seed, RngPurpose::kEncode, static_cast<uint64_t>(pending[j].item),
                                                    static_cast<uint64_t>(pending[j].k) + 1)));
          z = vae->encode(batch, torch::stack(noise));
        } else {
          z = vae->encode(batch);
        }
        z = z.to(torch::kFloat32);
        for (size_t j = b; j < stop; ++j) {
          const Pending& p = pending[j];
          if (p.k == 0) {  // (every crop of an image has its captions)
            captions.clear();
            const Item& item = items[p.item];
            for (size_t q = 0; q < item.captions.size(); ++q)
              captions.push_back({item.captions[q], states[next_caption++],
                                  item.nouns.empty() ? count_caption_nouns(item.captions[q]) : item.nouns[q]});
          }
          builder.add_image(z[static_cast<int64_t>(j - b)], captions, p.orig_h, p.orig_w, p.crop.top, p.crop.left);
        }
      }
      const std::string shard = (fs::path(c.out_dir) / (shard_name(s) + kShardExtension)).string();
      if (builder.num_images() > 0) write_shard(shard, builder.build(), c.write);
      write_file_atomic(records / (shard_name(s) + ".json"),
                        json{{"shard", builder.num_images() > 0 ? fs::path(shard).filename().string() : ""},
                             {"items", {first, last}},
                             {"images", builder.num_images()},
                             {"unreadable", skipped}}
                                .dump(1) +
                            "\n");
      ++written;
      images += builder.num_images();
      if (progress && rank == 0) {
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double per = t / static_cast<double>(n + 1);
        char line[200];
        std::snprintf(line, sizeof line, "encode: %s (%lld images); rank 0: %zu/%zu shards, %.1f images/s, ETA %s",
                      shard_name(s).c_str(), static_cast<long long>(builder.num_images()), n + 1, mine.size(),
                      static_cast<double>(images) / std::max(t, 1e-9),
                      format_duration(per * static_cast<double>(mine.size() - n - 1)).c_str());
        progress(line);
      }
    }
  });
  // 3. The totals, and (rank 0) every unreadable image of the shards this run wrote.
  std::vector<double> counts = {static_cast<double>(written), static_cast<double>(images),
                                static_cast<double>(done_before.size())};
  counts = parallel::all_reduce_host(comm, counts, parallel::HostOp::kSum);
  summary.shards_written = static_cast<int64_t>(counts[0]);
  summary.images_written = static_cast<int64_t>(counts[1]);
  summary.shards_skipped = static_cast<int64_t>(counts[2]);
  if (rank == 0)
    for (int64_t s = 0; s < shards; ++s) {
      const fs::path record = records / (shard_name(s) + ".json");
      if (!fs::exists(record)) continue;
      const json r = json::parse(read_file(record));  // (held: a loop over a temporary's member would dangle)
      for (const auto& u : r["unreadable"])
        summary.unreadable.push_back(u["image"].get<std::string>() + ": " + u["reason"].get<std::string>());
    }
  summary.images_unreadable = static_cast<int64_t>(summary.unreadable.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace dtrainer::data
