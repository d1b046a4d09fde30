#pragma once
// Writing shard format v1 (data/README.md). A shard is assembled in memory with ShardBuilder and
// written atomically: to "<path>.tmp", then renamed, so a crash never leaves a half-written shard
// under the real name.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/data/shard_format.h"

namespace dtrainer::data {

struct CaptionRecord {
  std::string text;      // may be empty when caption strings are not kept
  torch::Tensor tokens;  // [L, D] token embeddings (unpadded), L >= 1
  int64_t nouns = 0;     // number of nouns in the caption (image-noun pairs, [S1] §4)
};

// A whole shard in memory, in the layout of the file.
struct ShardContents {
  ShardHeader header;
  torch::Tensor latents;                  // [N, C, H, W]
  std::vector<int64_t> caption_offsets;   // [N + 1]: captions of image i are [off[i], off[i+1])
  std::vector<int64_t> token_offsets;     // [M + 1]: tokens of caption j are rows [off[j], off[j+1])
  torch::Tensor tokens;                   // [sum L, D]
  std::vector<int64_t> caption_nouns;     // [M]
  std::vector<std::string> captions;      // [M], or empty (no caption strings)
  std::vector<int64_t> original_size;     // [N * 2]: (height, width) in pixels
  std::vector<int64_t> crop;              // [N * 2]: (top, left) in pixels
  std::vector<int64_t> source;            // [N]: source dataset id
  std::vector<std::string> source_names;  // name of each source id
};

class ShardBuilder {
 public:
  explicit ShardBuilder(ShardHeader header, std::vector<std::string> source_names = {"default"});
  // Captions: the original first, then synthetic ones ranked best first. Throws Error on shapes
  // that do not fit the header (D, T_max) or the first image's latent shape.
  void add_image(const torch::Tensor& latent, const std::vector<CaptionRecord>& captions, int64_t orig_h,
                 int64_t orig_w, int64_t crop_top = 0, int64_t crop_left = 0, int64_t source = 0);
  int64_t num_images() const { return static_cast<int64_t>(latents_.size()); }
  ShardContents build() const;

 private:
  ShardHeader header_;
  std::vector<std::string> source_names_;
  std::vector<torch::Tensor> latents_, tokens_;
  ShardContents meta_;  // offsets and metadata accumulated so far
  bool keep_text_ = true;
};

struct ShardWriteOptions {
  ElementType latent_dtype = ElementType::kFloat32;
  ElementType token_dtype = ElementType::kFloat16;
  int64_t chunk_rows = 0;  // 0: contiguous datasets (fastest random reads); > 0: chunked by rows
  int gzip_level = 0;      // 1-9 compress chunked datasets (needs chunk_rows > 0)
};

// Validates the contents' internal consistency and writes them atomically. Throws Error(path).
void write_shard(const std::string& path, const ShardContents& contents, const ShardWriteOptions& options = {});

}  // namespace dtrainer::data
