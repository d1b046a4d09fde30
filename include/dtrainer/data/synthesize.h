#pragma once
// Synthetic datasets written as shard format v1 (`dtdata synth`):
//   shapes   the compositional dataset: RGB "pixel latents" in [-1, 1] (latent_space = pixels),
//            toy-encoder captions, noun counts, and eval_prompts.json (held-out prompts with
//            structured ground truth for the alignment benchmark)
//   latents  realistically sized random data (4x32x32 latents, 6 captions of 8-77 tokens x 1024)
//            for loader and I/O benchmarks

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/data/shard_writer.h"

namespace dtrainer::data {

struct SynthConfig {
  std::string kind = "shapes";  // shapes | latents
  std::string out_dir;
  int64_t images = 1024;
  int64_t images_per_shard = 1024;
  uint64_t seed = 0;
  int64_t image_size = 32;      // shapes: pixels per side
  int64_t latent_channels = 4;  // latents: C
  int64_t latent_size = 32;     // latents: H = W
  int64_t captions = 6;         // latents: captions per image (shapes always 1 + 5)
  int64_t text_dim = 1024;
  int64_t max_tokens = 77;
  int64_t eval_prompts = 64;  // shapes: held-out prompts
  bool force = false;         // replace existing shards in out_dir
  bool png = false;           // shapes: images as NNNNN.png + NNNNN.txt (captions) instead of shards, the
                              // input of dtdata encode (eval_prompts.json beside them)
  ShardWriteOptions write;
};

struct SynthReport {
  std::vector<std::string> shards;
  std::string eval_prompts;  // path, shapes only
  int64_t images = 0;
  int64_t captions = 0;
};

// Deterministic in (config, seed). Throws Error naming the field or path.
SynthReport synthesize(const SynthConfig& config);

}  // namespace dtrainer::data
