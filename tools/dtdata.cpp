// dtdata — write, inspect, validate, summarise and benchmark dtrainer's HDF5 latent shards.
//
//   dtdata synth --kind shapes|latents --out DIR --images N [--seed S] [...]
//   dtdata inspect PATH [--sample I]
//   dtdata validate PATH [--skip-bad-samples] [--json]     exit 0 only when every shard is sound
//   dtdata stats DIR [--json]
//   dtdata bench DIR [--json] [--batch B] [--seconds S]
//   mpirun -n R dtdata encode --images DIR|--list FILE --vae DIR --text-encoder DIR [--text-encoder-2 DIR]
//                             --resolution PX [--crop center|random] [--crop-scale LO,HI --crops-per-image K] --out DIR
// Exit codes: 0 success, 1 validation found problems, 2 bad input or error.

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/core/library_cleanup.h"
#include "dtrainer/core/temp_files.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/format_duration.h"
#include "dtrainer/core/blas_kernels.h"
#include "dtrainer/data/encode_dataset.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/data/synthesize.h"
#include "dtrainer/data/validate.h"
#include "dtrainer/core/log.h"
#include "dtrainer/parallel/compute_threads.h"
#include "dtrainer/parallel/mpi_runtime.h"

using namespace dtrainer;
using namespace dtrainer::data;
using nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> shard_files(const std::string& path) {
  if (fs::is_regular_file(path)) return {path};
  return list_shards(path);
}

int run_synth(SynthConfig c, const std::string& latent_dtype, const std::string& token_dtype) {
  c.write.latent_dtype = parse_element_type("--latent-dtype", latent_dtype);
  c.write.token_dtype = parse_element_type("--token-dtype", token_dtype);
  const auto t0 = std::chrono::steady_clock::now();
  const SynthReport r = synthesize(c);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wrote %lld images, %lld captions in %zu shard(s) under %s (%.1f s)\n", static_cast<long long>(r.images),
              static_cast<long long>(r.captions), r.shards.size(), c.out_dir.c_str(), s);
  if (!r.eval_prompts.empty()) std::printf("held-out evaluation prompts: %s\n", r.eval_prompts.c_str());
  return 0;
}

int run_inspect(const std::string& path, int64_t sample) {
  for (const auto& f : shard_files(path)) {
    const ShardReader s(f);
    const auto& h = s.header();
    std::printf("%s\n  schema_version %lld, latent_space %s, latent_encoder %s, text_encoder %s\n", f.c_str(),
                static_cast<long long>(h.schema_version), h.latent_space.c_str(), h.latent_encoder.c_str(),
                h.text_encoder.c_str());
    std::printf(
        "  images %lld, captions %lld, latents [%lld, %lld, %lld] %s, tokens D=%lld (max %lld) %s, caption text: %s\n",
        static_cast<long long>(s.num_images()), static_cast<long long>(s.num_captions()),
        static_cast<long long>(s.latent_shape()[0]), static_cast<long long>(s.latent_shape()[1]),
        static_cast<long long>(s.latent_shape()[2]), to_string(s.latent_dtype()), static_cast<long long>(h.text_dim),
        static_cast<long long>(h.max_tokens), to_string(s.token_dtype()), s.has_caption_text() ? "yes" : "no");
    if (sample >= 0 && sample < s.num_images()) {
      const auto texts = s.caption_texts();
      const auto size = s.original_size(sample), crop = s.crop(sample);
      std::printf("  image %lld: original %lldx%lld, crop (%lld, %lld), source %s\n", static_cast<long long>(sample),
                  static_cast<long long>(size[0]), static_cast<long long>(size[1]), static_cast<long long>(crop[0]),
                  static_cast<long long>(crop[1]), s.source_names()[s.source(sample)].c_str());
      for (int64_t k = 0; k < s.caption_count(sample); ++k) {
        const int64_t j = s.first_caption(sample) + k;
        std::printf("    %s %lld tokens, %lld nouns: %s\n",
                    k == 0 ? "original " : ("synthetic" + std::to_string(k)).c_str(),
                    static_cast<long long>(s.token_length(j)), static_cast<long long>(s.caption_nouns(j)),
                    texts.empty() ? "(no text stored)" : texts[j].c_str());
      }
    }
  }
  return 0;
}

int run_validate(const std::string& path, bool skip_bad, bool json) {
  ValidationReport r = fs::is_regular_file(path) ? validate_shard(path) : validate_directory(path);
  int64_t sample_level = 0;
  for (const auto& p : r.problems) sample_level += p.image >= 0;
  const bool file_level = static_cast<int64_t>(r.problems.size()) > sample_level;
  const bool ok = !r.files.empty() && !file_level && (sample_level == 0 || skip_bad);
  if (json) {
    ordered_json j;
    j["ok"] = ok;
    j["files"] = r.files.size();
    j["images"] = r.images;
    j["captions"] = r.captions;
    ordered_json probs = ordered_json::array();
    for (const auto& p : r.problems) probs.push_back({{"file", p.file}, {"image", p.image}, {"problem", p.what}});
    j["problems"] = probs;
    j["skipped_samples"] = skip_bad ? sample_level : 0;
    std::cout << j.dump(2) << "\n";
  } else {
    for (const auto& p : r.problems) std::fprintf(stderr, "dtdata: %s\n", p.message().c_str());
    if (skip_bad && sample_level > 0)
      std::printf("%lld bad sample(s) would be skipped (--skip-bad-samples)\n", static_cast<long long>(sample_level));
    std::printf("%s: %zu shard(s), %lld images, %lld captions, %zu problem(s)\n", ok ? "OK" : "INVALID", r.files.size(),
                static_cast<long long>(r.images), static_cast<long long>(r.captions), r.problems.size());
  }
  return ok ? 0 : 1;
}

int run_stats(const std::string& path, bool json) {
  int64_t images = 0, captions = 0, tokens = 0, d_original = 0, d_all = 0, bytes = 0;
  std::map<int64_t, int64_t> hist;  // token length bucket (8 wide) -> captions
  std::map<std::string, int64_t> sources;
  const auto files = shard_files(path);
  for (const auto& f : files) {
    const ShardReader s(f);
    images += s.num_images();
    captions += s.num_captions();
    bytes += static_cast<int64_t>(fs::file_size(f));
    for (int64_t i = 0; i < s.num_images(); ++i) {
      d_original += s.caption_nouns(s.first_caption(i));
      sources[s.source_names()[s.source(i)]] += 1;
    }
    for (int64_t j = 0; j < s.num_captions(); ++j) {
      tokens += s.token_length(j);
      d_all += s.caption_nouns(j);
      hist[(s.token_length(j) - 1) / 8 * 8 + 1] += 1;
    }
  }
  if (json) {
    ordered_json h = ordered_json::object();
    for (const auto& [lo, n] : hist) h[std::to_string(lo) + "-" + std::to_string(lo + 7)] = n;
    ordered_json j = {{"files", files.size()},
                      {"bytes", bytes},
                      {"images", images},
                      {"captions", captions},
                      {"captions_per_image", double(captions) / images},
                      {"mean_tokens", double(tokens) / captions},
                      {"image_noun_pairs_original", d_original},
                      {"image_noun_pairs_all_captions", d_all},
                      {"token_length_histogram", h},
                      {"sources", sources}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("%zu shard(s), %.1f MB: %lld images, %lld captions (%.2f per image), %.1f tokens per caption\n",
              files.size(), bytes / 1e6, static_cast<long long>(images), static_cast<long long>(captions),
              double(captions) / images, double(tokens) / captions);
  std::printf("image-noun pairs D: %lld with original captions, %lld over all captions\n",
              static_cast<long long>(d_original), static_cast<long long>(d_all));
  std::printf("token lengths:\n");
  for (const auto& [lo, n] : hist)
    std::printf("  %3lld-%-3lld %8lld %s\n", static_cast<long long>(lo), static_cast<long long>(lo + 7),
                static_cast<long long>(n),
                std::string(std::min<int64_t>(60, 60 * n / std::max<int64_t>(1, captions)), '#').c_str());
  for (const auto& [name, n] : sources)
    std::printf("source %s: %lld images\n", name.c_str(), static_cast<long long>(n));
  return 0;
}

// Sequential read of the files with O_DIRECT (no page cache): the storage device's bandwidth.
// Returns 0 when the file system does not support O_DIRECT.
double direct_read_mb_per_s(const std::vector<std::string>& files) {
  const size_t block = 8 << 20;
  void* buf = nullptr;
  if (posix_memalign(&buf, 4096, block) != 0) return 0;
  int64_t bytes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& f : files) {
    const int fd = open(f.c_str(), O_RDONLY | O_DIRECT);
    if (fd < 0) {
      free(buf);
      return 0;
    }
    ssize_t n;
    while ((n = read(fd, buf, block)) > 0) bytes += n;
    close(fd);
    if (n < 0) {
      free(buf);
      return 0;
    }
  }
  free(buf);
  return bytes / 1e6 / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Sequential read of every file with large read() calls through the page cache.
double raw_read_mb_per_s(const std::vector<std::string>& files, int64_t* total_bytes) {
  std::vector<char> buf(8 << 20);
  int64_t bytes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) bytes += in.gcount();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  *total_bytes = bytes;
  return bytes / 1e6 / s;
}

int run_bench(const std::string& dir, bool json, int64_t batch, double seconds, const std::string& padding,
              int64_t workers) {
  at::set_num_threads(1);  // each loader thread does its own work on one core
  const auto files = list_shards(dir);
  int64_t file_bytes = 0;
  raw_read_mb_per_s(files, &file_bytes);  // warm the page cache: both figures then read from memory
  const double raw = raw_read_mb_per_s(files, &file_bytes);
  const double direct = direct_read_mb_per_s(files);
  LoaderConfig c;
  c.dirs = {dir};
  c.global_batch = batch;
  // workers = 1: synchronous in this thread, the loading work itself on one core; more: that many
  // background threads building batches (prefetch = 2 per worker), as training would run it.
  c.prefetch = workers == 1 ? 0 : 2 * workers;
  c.workers = workers;
  c.padding.policy = diffusion::parse_text_padding("--padding", padding);
  Loader loader(c);
  loader.next();  // first batch: permutation and caches
  int64_t samples = 0, bytes = 0, batches = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double s = 0;
  while (s < seconds) {
    const Batch b = loader.next();
    samples += b.latents.size(0);
    bytes += b.bytes_read;
    ++batches;
    s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double sps = samples / s, mbps = bytes / 1e6 / s;
  if (json) {
    ordered_json j = {{"samples_per_s", sps},
                      {"loader_mb_per_s", mbps},
                      {"raw_read_mb_per_s", raw},
                      {"loader_fraction_of_raw", mbps / raw},
                      {"direct_read_mb_per_s", direct},
                      {"loader_fraction_of_direct", direct > 0 ? mbps / direct : 0.0},
                      {"batch", batch},
                      {"batches", batches},
                      {"seconds", s},
                      {"padding", padding},
                      {"files", files.size()},
                      {"file_bytes", file_bytes},
                      {"workers", workers}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf(
        "raw sequential read: %.0f MB/s through the warm page cache, %.0f MB/s from the device (O_DIRECT) (%zu files, "
        "%.1f MB)\n",
        raw, direct, files.size(), file_bytes / 1e6);
    std::printf(
        "loader (%lld thread(s), batch %lld, %s padding): %.0f samples/s, %.0f MB/s read = %.0f%% of the cached raw "
        "read, %.0f%% of the device's (%lld batches, %.1f s)\n",
        static_cast<long long>(workers), static_cast<long long>(batch), padding.c_str(), sps, mbps, 100 * mbps / raw,
        direct > 0 ? 100 * mbps / direct : 0.0, static_cast<long long>(batches), s);
  }
  return 0;
}

int run_encode(int* argc, char*** argv, EncodeConfig c, const std::string& latent_dtype, const std::string& token_dtype,
               const std::string& crop_scale, int64_t threads) {
  return parallel::run_ranks(argc, argv, [&](parallel::MpiRuntime& rt) -> int {
    try {
      parallel::set_compute_threads(threads, rt.local_world());
      c.write.latent_dtype = parse_element_type("--latent-dtype", latent_dtype);
      c.write.token_dtype = parse_element_type("--token-dtype", token_dtype);
      if (!crop_scale.empty()) {
        const size_t comma = crop_scale.find(',');
        char* end = nullptr;
        if (comma == std::string::npos) throw Error("--crop-scale", "expected LO,HI, got '" + crop_scale + "'");
        c.crop_scale_lo = std::strtod(crop_scale.substr(0, comma).c_str(), &end);
        c.crop_scale_hi = std::strtod(crop_scale.substr(comma + 1).c_str(), &end);
        if (!(c.crop_scale_lo > 0))
          throw Error("--crop-scale", "expected LO,HI with 0 < LO <= HI <= 1, got '" + crop_scale + "'");
      }
      const EncodeSummary r = encode_dataset(c, rt.comm(), [](const std::string& line) { log_info(line); });
      if (rt.rank() == 0) {
        std::printf(
            "encoded %lld items into %lld shards in %s on %d rank(s): %lld shards written now (%lld images), "
            "%lld done before\n",
            static_cast<long long>(r.items), static_cast<long long>(r.shards), format_duration(r.seconds).c_str(),
            rt.world(), static_cast<long long>(r.shards_written), static_cast<long long>(r.images_written),
            static_cast<long long>(r.shards_skipped));
        if (r.images_unreadable) {
          std::printf("%lld unreadable image(s) skipped (listed in %s/encode/shard-*.json):\n",
                      static_cast<long long>(r.images_unreadable), c.out_dir.c_str());
          for (size_t i = 0; i < r.unreadable.size() && i < 10; ++i) std::printf("  %s\n", r.unreadable[i].c_str());
        }
        std::fflush(stdout);
      }
      return 0;
    } catch (const CollectiveError& e) {
      if (rt.rank() == 0) std::fprintf(stderr, "dtdata encode: error: %s\n", e.what());
      return 2;
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  select_native_blas_kernels();  // (before any BLAS call: the encoders multiply)
  dtrainer::remove_temp_files_on_signals();  // (an interrupted write leaves no FILE.tmp-PID behind)
  CLI::App app{
      "dtdata: write, inspect, validate, summarise and benchmark HDF5 latent shards (format v1, see data/README.md)"};
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 validation found problems, 2 bad input or error.");

  SynthConfig synth;
  std::string latent_dtype = "float32", token_dtype = "float16";
  CLI::App* s =
      app.add_subcommand("synth", "write a synthetic dataset: shapes (compositional) or latents (benchmark-sized)");
  s->add_option("--kind", synth.kind, "shapes | latents")->capture_default_str();
  s->add_option("--out", synth.out_dir, "output directory")->required();
  s->add_option("--images", synth.images, "number of images")->capture_default_str();
  s->add_option("--seed", synth.seed, "random seed")->capture_default_str();
  s->add_option("--images-per-shard", synth.images_per_shard, "images per shard file")->capture_default_str();
  s->add_option("--image-size", synth.image_size, "shapes: image side in pixels")->capture_default_str();
  s->add_option("--latent-size", synth.latent_size, "latents: latent side")->capture_default_str();
  s->add_option("--captions", synth.captions, "latents: captions per image")->capture_default_str();
  s->add_option("--text-dim", synth.text_dim, "token embedding width D")->capture_default_str();
  s->add_option("--max-tokens", synth.max_tokens, "longest caption T")->capture_default_str();
  s->add_option("--eval-prompts", synth.eval_prompts, "shapes: held-out evaluation prompts")->capture_default_str();
  s->add_option("--latent-dtype", latent_dtype, "float32 | float16 | bfloat16")->capture_default_str();
  s->add_option("--token-dtype", token_dtype, "float32 | float16 | bfloat16")->capture_default_str();
  s->add_option("--chunk-rows", synth.write.chunk_rows, "0 = contiguous datasets; > 0 = chunks of this many rows")
      ->capture_default_str();
  s->add_option("--gzip", synth.write.gzip_level, "gzip level 1-9 for chunked datasets (0 = off)")
      ->capture_default_str();
  s->add_flag("--force", synth.force, "replace shards already in --out");
  s->add_flag("--png", synth.png,
              "shapes: write the images as NNNNN.png with captions in NNNNN.txt (and eval_prompts.json), the input "
              "of dtdata encode, instead of shards");

  std::string path;
  int64_t sample = 0;
  CLI::App* in = app.add_subcommand("inspect", "print a shard's attributes, datasets and one sample's captions");
  in->add_option("path", path, "shard file or directory")->required();
  in->add_option("--sample", sample, "image whose captions to print (-1: none)")->capture_default_str();

  bool skip_bad = false, json = false;
  CLI::App* v =
      app.add_subcommand("validate", "check every shard's structure and values; exit 0 only when all are sound");
  v->add_option("path", path, "shard file or directory")->required();
  v->add_flag("--skip-bad-samples", skip_bad,
              "accept bad samples (reported and counted) as training with this flag would");
  v->add_flag("--json", json, "print a JSON report");

  CLI::App* st = app.add_subcommand("stats", "images, captions, token-length histogram, image-noun pairs D");
  st->add_option("path", path, "shard file or directory")->required();
  st->add_flag("--json", json, "print JSON");

  int64_t batch = 256;
  double seconds = 5;
  std::string padding = "zero";
  int64_t workers = 1;
  CLI::App* b = app.add_subcommand("bench", "loader samples/s and MB/s against the raw sequential read bandwidth");
  b->add_option("path", path, "shard directory")->required();
  b->add_flag("--json", json, "print JSON");
  b->add_option("--batch", batch, "samples per batch")->capture_default_str();
  b->add_option("--seconds", seconds, "how long to run the loader")->capture_default_str();
  b->add_option("--padding", padding, "zero | replicate | noisy_replicate")->capture_default_str();
  b->add_option("--workers", workers, "loader threads (1 = synchronous, one core)")->capture_default_str();

  EncodeConfig enc;
  std::string enc_latent_dtype = "float32", enc_token_dtype = "float16", crop_scale;
  int64_t threads = 0;
  CLI::App* e = app.add_subcommand("encode",
                                   "images and captions -> shards through a release's VAE and CLIP text encoder(s), on "
                                   "every MPI rank (mpirun -n R)");
  e->footer(
      "Each image is resized so its shorter side is --resolution and cropped square (the original size and the crop's\n"
      "top/left are recorded). Captions: --images DIR reads <stem>.txt beside each image (one caption per line, the\n"
      "original first); --list FILE reads JSON lines {\"image\", \"caption\", \"synthetic_captions\": [...], "
      "\"nouns\":\n"
      "[...]} (nouns: counts per caption from a tagger; without them a heuristic counts, data/caption_nouns.h).\n"
      "Shard s is encoded by rank s mod R; finished shards are recorded in OUT/encode/ and a rerun skips them.\n"
      "Unreadable images are skipped and listed. docs/DATA.md has each paper's command and the weights to get.");
  e->add_option("--images", enc.images_dir, "folder of .png/.jpg images, each with a <stem>.txt caption file");
  e->add_option("--list", enc.list_file, "JSON-lines list of items (instead of --images)");
  e->add_option("--out", enc.out_dir, "output folder of shards")->required();
  e->add_option("--vae", enc.vae_dir,
                "diffusers AutoencoderKL folder (config.json, diffusion_pytorch_model.safetensors)")
      ->required();
  e->add_option("--text-encoder", enc.text_encoder_dir, "CLIP text encoder folder (config.json, model.safetensors)")
      ->required();
  e->add_option("--text-encoder-2", enc.text_encoder_2_dir, "second text encoder, concatenated after the first (SDXL)");
  e->add_option("--tokenizer", enc.tokenizer_dir, "tokenizer folder (default: the encoder's ../tokenizer)");
  e->add_option("--tokenizer-2", enc.tokenizer_2_dir, "second tokenizer folder (default: ../tokenizer_2)");
  e->add_option("--text-layer", enc.text_layer,
                "last | penultimate | penultimate-normed (auto: last for one encoder, penultimate for two)")
      ->capture_default_str();
  e->add_option("--resolution", enc.resolution, "image side in pixels")->capture_default_str();
  e->add_option("--crop", enc.crop, "center | random (keyed by --seed and the item)")->capture_default_str();
  e->add_option("--crop-scale", crop_scale, "LO,HI: [S2] crop-scale crops of LO..HI of the shorter side");
  e->add_option("--crops-per-image", enc.crops_per_image, "crop-scale crops per image")->capture_default_str();
  e->add_flag("--sample", enc.sample_latents, "store a posterior sample (keyed) instead of the posterior mean");
  e->add_option("--images-per-shard", enc.images_per_shard, "items per shard file")->capture_default_str();
  e->add_option("--batch", enc.batch, "images per VAE call (and captions per text-encoder call)")
      ->capture_default_str();
  e->add_option("--seed", enc.seed, "seed of random crops and sampled latents")->capture_default_str();
  e->add_option("--dtype", enc.dtype, "encoders' compute type: fp32 | bf16")->capture_default_str();
  e->add_option("--latent-space", enc.latent_space, "shard attribute (default from the VAE: sdxl-vae, sd-vae)");
  e->add_option("--latent-dtype", enc_latent_dtype, "float32 | float16 | bfloat16")->capture_default_str();
  e->add_option("--token-dtype", enc_token_dtype, "float32 | float16 | bfloat16")->capture_default_str();
  e->add_option("--threads", threads, "compute threads per rank (0: the node's cores / ranks on it)")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  if (*e) return run_encode(&argc, &argv, enc, enc_latent_dtype, enc_token_dtype, crop_scale, threads);
  try {
    if (*s) return run_synth(synth, latent_dtype, token_dtype);
    if (*in) return run_inspect(path, sample);
    if (*v) return run_validate(path, skip_bad, json);
    if (*st) return run_stats(path, json);
    if (*b) return run_bench(path, json, batch, seconds, padding, workers);
  } catch (const Error& e) {
    std::fprintf(stderr, "dtdata: error: %s\n", e.what());
    if (library_cleanup_forbidden()) std::_Exit(2);  // (HDF5's exit handlers would crash: core/library_cleanup.h)
    return 2;
  }
  return 0;
}
