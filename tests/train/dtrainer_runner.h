#pragma once
// Runs the dtrainer binary under mpirun on a small synthetic dataset, as a user would (tests that
// drive the trainer end to end). Needs MPIEXEC and DTRAINER_PATH defined by the test's CMake.

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "data/data_test_util.h"
#include "dtrainer/data/synthesize.h"

namespace dtrainer::test {

// Small shapes data, made once per test process.
inline const std::string& data_root() {
  static const std::string root = [] {
    const std::string r = test::scratch_dir("dtrainer-data");
    for (auto [name, images, seed] : {std::tuple<const char*, int64_t, uint64_t>{"train", 256, 1}, {"eval", 32, 2}}) {
      data::SynthConfig s;
      s.out_dir = r + "/" + name;
      s.images = images;
      s.images_per_shard = images;
      s.seed = seed;
      s.image_size = 16;
      s.text_dim = 32;
      s.max_tokens = 16;
      s.eval_prompts = 4;
      data::synthesize(s);
    }
    return r;
  }();
  return root;
}

inline const char* kTinyUNet =
    " --model-set model_channels=16 channel_mult=1,2 transformer_depth=0,1 num_res_blocks=1 head_dim=8 norm_groups=4";

// device: the trainer's --device (these runs test the trainer's logic with the CPU's exact
// arithmetic unless a test asks for a GPU).
// One rank: --mca odls_base_sigkill_timeout 0. After a rank exits non-zero, Open MPI's mpirun
// gives the job's other ranks this many seconds between SIGTERM and SIGKILL (default 1, measured
// ~2 s per launch here). A 1-rank job has no other rank, so the wait buys nothing: it only delays
// every expected failure (the bad-input tests make dozens).
inline std::string command(int ranks, const std::string& args, const std::string& model = kTinyUNet,
                           const std::string& device = "cpu") {
  return std::string(MPIEXEC) + " --allow-run-as-root --oversubscribe" +
         (ranks == 1 ? " --mca odls_base_sigkill_timeout 0" : "") + " -n " + std::to_string(ranks) + " " +
         DTRAINER_PATH + " --data " + data_root() + "/train --eval-data " + data_root() + "/eval" + model +
         " --max-tokens 16 --global-batch 8 --log-every 1 --eval-every 0 --sample-count 2 --sample-steps 3"
         " --warmup-steps 2 --threads 1 --peak-tflops 1 --workers 1 --device " +
         device + " " + args;
}

inline int run(int ranks, const std::string& args, const std::string& log, const std::string& model = kTinyUNet,
               const std::string& device = "cpu") {
  const int rc = std::system((command(ranks, args, model, device) + " > " + log + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// step -> training record of run_dir/metrics.jsonl (the evaluation and alignment records left out).
inline std::map<int64_t, nlohmann::json> training_records(const std::string& run_dir) {
  std::map<int64_t, nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval") || j.contains("alignment")) continue;
    const auto step = j.at("step").get<int64_t>();  // read before the move below
    out[step] = std::move(j);
  }
  return out;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace dtrainer::test
