#pragma once
// dtdata encode: images and captions -> shard format v1 (data/README.md), through a release's VAE
// (models/autoencoder_kl.h) and CLIP text encoder(s) (models/clip_text_model.h), on any number of
// MPI ranks.
//
// The items (an image and its captions, the original first) are numbered in a fixed order, cut into
// shards of `images_per_shard` items, and shard s is encoded by rank s mod R: so what a shard holds
// does not depend on the number of ranks, and 1 and R ranks write identical files. Every random
// choice (a random crop, a crop-scale crop, a sampled latent) is keyed by (seed, item, crop), never
// by rank or order. Each shard is written atomically and then recorded in OUT/encode/; a rerun
// skips recorded shards, so a killed job loses at most the shards in flight, and a rerun with other
// settings than OUT/encode.json records is refused.
//
// Images are resized (antialiased) so that the shorter side is `resolution`, then cropped square
// (centre or random), recording the original size and the crop's top / left in the resized image,
// as SDXL and [S2] condition on them. With crop_scale (lo, hi), each of `crops_per_image` crops is a
// square of side s * shorter side (s uniform in [lo, hi], [S2]'s crop-scale pre-training) resized
// to `resolution`, its top / left recorded in the coordinates of the image scaled by resolution / side.
// A file that is not a readable PNG or JPEG is skipped and counted (named in the shard's record and
// the summary), never fatal: a web-scale folder has broken files.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <mpi.h>

#include "dtrainer/data/shard_writer.h"

namespace dtrainer::data {

struct EncodeConfig {
  std::string images_dir;  // a folder of images, each with its captions in <stem>.txt (one per line)
  std::string list_file;   // or a JSON-lines list: {"image", "caption", "synthetic_captions"?, "nouns"?}
  std::string out_dir;
  std::string vae_dir;              // diffusers AutoencoderKL folder
  std::string text_encoder_dir;     // transformers CLIPTextModel folder
  std::string text_encoder_2_dir;   // optional second encoder (SDXL: bigG), concatenated after the first
  std::string tokenizer_dir;        // default: <text encoder>/../tokenizer, or the encoder folder itself
  std::string tokenizer_2_dir;      // default: <text encoder 2>/../tokenizer_2
  std::string text_layer = "auto";  // last | penultimate | penultimate-normed; auto: last (one), penultimate (two)
  std::string latent_space;         // shard attribute; default from the VAE's scaling factor (sdxl-vae, sd-vae)
  int64_t resolution = 256;
  std::string crop = "center";                  // center | random
  double crop_scale_lo = 0, crop_scale_hi = 0;  // [S2] crop scale; 0, 0: off
  int64_t crops_per_image = 1;                  // (crop scale only)
  bool sample_latents = false;                  // posterior sample instead of its mean
  int64_t images_per_shard = 1000;
  int64_t batch = 8;  // images per VAE call
  uint64_t seed = 0;
  std::string dtype = "fp32";  // encoders' compute: fp32 | bf16
  ShardWriteOptions write;
};

struct EncodeSummary {
  int64_t items = 0, shards = 0;
  int64_t shards_skipped = 0;  // recorded by an earlier run
  int64_t shards_written = 0, images_written = 0, images_unreadable = 0;
  double seconds = 0;
  std::vector<std::string> unreadable;  // "path: reason", of every recorded shard (rank 0 only)
};

// Runs the encode on every rank of comm (collective). Bad settings, an unreadable folder or list, a
// missing or mismatched weights file: a CollectiveError naming it, before any shard is written.
// `progress` (rank 0 only; may be empty) receives a line after each of rank 0's shards.
EncodeSummary encode_dataset(const EncodeConfig& config, MPI_Comm comm,
                             const std::function<void(const std::string&)>& progress = nullptr);

}  // namespace dtrainer::data
