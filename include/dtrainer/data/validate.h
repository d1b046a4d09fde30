#pragma once
// Full validation of shards: structure (what opening a ShardReader checks) plus every value —
// finite latents and token embeddings, sane metadata — and consistency across the shards of a
// directory (latent shape, text width, latent space).

#include <cstdint>
#include <string>
#include <vector>

namespace dtrainer::data {

struct ValidationProblem {
  std::string file;
  int64_t image = -1;  // the sample concerned, or -1 for the whole file
  std::string what;
  std::string message() const;
};

struct ValidationReport {
  std::vector<std::string> files;
  int64_t images = 0;
  int64_t captions = 0;
  std::vector<ValidationProblem> problems;
  bool ok() const { return problems.empty() && !files.empty(); }
};

// The shard files (*.h5) of a directory, sorted by name. Throws Error(dir) if the directory is
// missing or holds no shard.
std::vector<std::string> list_shards(const std::string& dir);

ValidationReport validate_shard(const std::string& path);
ValidationReport validate_directory(const std::string& dir);

}  // namespace dtrainer::data
