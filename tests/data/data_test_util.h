#pragma once
// Helpers for the data tests: scratch directories and small random shards.

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "dtrainer/core/remove_tree.h"
#include "dtrainer/data/shard_writer.h"

namespace dtrainer::test {

// Removes the scratch directories this process made when it exits.
struct ScratchCleanup {
  std::vector<std::filesystem::path> dirs;
  ~ScratchCleanup() {
    for (const auto& d : dirs) try_remove_tree(d);
  }
};
inline ScratchCleanup& scratch_cleanup() {
  static ScratchCleanup c;
  return c;
}

// A fresh, empty directory under the system temp dir, unique to this process and name; removed
// when the test process exits.
inline std::string scratch_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("dtrainer-test-" + std::to_string(getpid()) + "-" + name);
  remove_tree(p);
  std::filesystem::create_directories(p);
  scratch_cleanup().dirs.push_back(p);
  return p.string();
}

// `n` images of [C, S, S] latents with 1-4 captions each (random lengths 1..T, width D).
inline data::ShardContents random_shard(int64_t n, int seed, int64_t C = 4, int64_t S = 8, int64_t D = 16,
                                        int64_t T = 12, int64_t first_id = 0) {
  torch::manual_seed(seed);
  data::ShardHeader h;
  h.text_dim = D;
  h.max_tokens = T;
  h.text_encoder = "test";
  data::ShardBuilder b(h, {"a", "b"});
  for (int64_t i = 0; i < n; ++i) {
    std::vector<data::CaptionRecord> caps;
    const int64_t k = 1 + torch::randint(0, 4, {1}).item<int64_t>();
    for (int64_t j = 0; j < k; ++j) {
      const int64_t L = 1 + torch::randint(0, T, {1}).item<int64_t>();
      caps.push_back(
          {"caption " + std::to_string(first_id + i) + "." + std::to_string(j), torch::randn({L, D}), j + 1});
    }
    b.add_image(torch::randn({C, S, S}) + static_cast<double>(first_id + i), caps, 64 + i, 96, i % 3, i % 5, i % 2);
  }
  return b.build();
}

inline int run_command(const std::string& cmd) {
  const int status = std::system((cmd + " > /dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace dtrainer::test
