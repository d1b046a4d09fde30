#pragma once
// Flat-parameter sharding in the spirit of PyTorch FSDP: a module's parameters move into one flat
// fp32 buffer (padded to a multiple of the world size; the module's tensors become views into it),
// and the optimizer state is sharded over ranks:
//   replicate  every rank keeps everything; gradients all-reduced (DDP)
//   zero1      optimizer state (m, v) sharded; gradients all-reduced; params all-gathered after the step
//   zero2      + gradients reduce-scattered (each rank receives only its reduced shard; the local
//              flat gradient buffer is still full-size: per-bucket reduction during backward, which
//              would free it, is not built yet)
// (zero3 — parameters sharded too, gathered per unit for forward and backward — is not built yet.)

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "dtrainer/dist/adamw.h"
#include "dtrainer/dist/communicator.h"

namespace dtrainer::dist {

enum class ShardingStrategy { kReplicate, kZero1, kZero2 };
ShardingStrategy parse_sharding_strategy(const std::string& field, const std::string& text);

struct ShardedMemory {
  int64_t param_bytes = 0;            // fp32 parameters held by this rank
  int64_t grad_bytes = 0;             // fp32 flat gradient buffer held by this rank
  int64_t optimizer_state_bytes = 0;  // m and v held by this rank
  int64_t padded_elements = 0;        // total flat elements including padding
};

class ShardedParameters {
 public:
  // Takes over `module`'s parameters (all ranks must pass identically initialised modules, e.g.
  // built after the same seed). comm may be null for a single process.
  ShardedParameters(torch::nn::Module& module, Communicator* comm, ShardingStrategy strategy, AdamWConfig config);

  // After backward: reduce the gradients, clip to max_grad_norm (<= 0: off), update, and make the
  // module's parameters current on every rank. grad_scale multiplies the gradients first (e.g.
  // 1 / accumulation steps). Returns the global gradient norm before clipping.
  double step(double max_grad_norm = 0.0, double grad_scale = 1.0);
  void zero_grad();

  ShardedMemory memory() const;
  int64_t steps() const { return step_; }
  ShardingStrategy strategy() const { return strategy_; }

 private:
  std::vector<torch::Tensor> params_;  // the module's parameters (views into flat_)
  torch::Tensor flat_, flat_grad_, m_, v_;
  int64_t numel_ = 0, padded_ = 0, shard_ = 0, rank_ = 0, world_ = 1;
  Communicator* comm_;
  ShardingStrategy strategy_;
  AdamWConfig config_;
  int64_t step_ = 0;
};

}  // namespace dtrainer::dist
