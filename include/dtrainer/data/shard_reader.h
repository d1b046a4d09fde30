#pragma once
// Reading shard format v1. Opening a shard checks its structure (attributes, datasets, shapes,
// offsets) and keeps the small metadata in memory; latents and token embeddings are read per
// sample. Every problem throws dtrainer::Error naming the file (and the sample where it applies).
//
// A shard must not change while it is read: HDF5 returns zeros for reads past the end of a file,
// so a shard truncated or overwritten in place during a run (`cp new.h5 data/` does both while it
// copies) would train on zeros without a word. The file's identity (device, inode, size,
// modification time) is taken at open and compared after every read; any difference throws
// ShardChangedError, which skip_bad_samples never skips.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/core/error.h"
#include "dtrainer/data/shard_format.h"
#include "dtrainer/data/shard_writer.h"

namespace dtrainer::data {

class ShardChangedError : public Error {
 public:
  using Error::Error;
};

class ShardReader {
 public:
  explicit ShardReader(const std::string& path);
  ~ShardReader();
  ShardReader(ShardReader&&) noexcept;
  ShardReader& operator=(ShardReader&&) noexcept;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  int64_t num_images() const { return num_images_; }
  int64_t num_captions() const { return static_cast<int64_t>(caption_nouns_.size()); }
  const std::vector<int64_t>& latent_shape() const { return latent_shape_; }  // [C, H, W]
  ElementType latent_dtype() const { return latent_dtype_; }
  ElementType token_dtype() const { return token_dtype_; }

  // Captions of image i: global caption rows [first_caption(i), first_caption(i) + caption_count(i)).
  int64_t first_caption(int64_t image) const { return caption_offsets_.at(image); }
  int64_t caption_count(int64_t image) const { return caption_offsets_.at(image + 1) - caption_offsets_.at(image); }
  int64_t token_length(int64_t caption) const { return token_offsets_.at(caption + 1) - token_offsets_.at(caption); }
  int64_t caption_nouns(int64_t caption) const { return caption_nouns_.at(caption); }
  std::array<int64_t, 2> original_size(int64_t image) const {
    return {original_size_.at(2 * image), original_size_.at(2 * image + 1)};
  }
  std::array<int64_t, 2> crop(int64_t image) const { return {crop_.at(2 * image), crop_.at(2 * image + 1)}; }
  int64_t source(int64_t image) const { return source_.at(image); }
  const std::vector<std::string>& source_names() const { return source_names_; }
  bool has_caption_text() const;
  std::vector<std::string> caption_texts() const;

  // One image's latent [C, H, W] / one caption's tokens [L, D], in the stored dtype.
  torch::Tensor read_latent(int64_t image) const;
  torch::Tensor read_tokens(int64_t caption) const;
  // Raw reads into caller memory (element_bytes(dtype) per element), for the loader.
  void read_latent_into(int64_t image, void* out) const;
  void read_tokens_into(int64_t caption, void* out) const;
  // Bytes fetched from the file by read_* since opening (for the loader's bandwidth figure).
  int64_t bytes_read() const { return bytes_read_; }

  // The whole shard, in the stored dtypes (tests: bit-exact round trips).
  ShardContents read_all() const;
  // Latent / token rows [row, row + count) in the stored dtype (validation scans).
  torch::Tensor read_latent_rows(int64_t row, int64_t count) const;
  torch::Tensor read_token_rows(int64_t row, int64_t count) const;

 private:
  struct Handles;
  struct Identity {
    uint64_t dev = 0, ino = 0;
    int64_t size = 0, mtime_ns = 0;
  };
  void check_unchanged() const;  // throws ShardChangedError
  std::string path_;
  Identity identity_;
  ShardHeader header_;
  int64_t num_images_ = 0;
  std::vector<int64_t> latent_shape_;
  ElementType latent_dtype_ = ElementType::kFloat32, token_dtype_ = ElementType::kFloat16;
  std::vector<int64_t> caption_offsets_, token_offsets_, caption_nouns_, original_size_, crop_, source_;
  std::vector<std::string> source_names_;
  std::unique_ptr<Handles> h_;
  mutable int64_t bytes_read_ = 0;
};

}  // namespace dtrainer::data
