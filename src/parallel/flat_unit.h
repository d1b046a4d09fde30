#pragma once
// One unit's flat state (private to src/parallel). Flat layout: the unit's parameters back to back, then
// zeros up to `padded` (a multiple of the W ranks); rank r owns elements [r * shard, (r + 1) * shard).
// The module's parameters are views into `full` (the compute dtype), so the model needs no code
// of its own for sharding; under zero3 they are empty between steps. Which buffers exist, and how
// big, is the sharding policy's (parallel/sharding_policy.h); the optimizer state lives with the
// optimizer (parallel/shard_optimizer.h).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/parallel/sharding_policy.h"

namespace torch::autograd {
struct Node;
}

namespace dtrainer::parallel {

struct FlatUnit {
  std::string name;
  std::vector<torch::Tensor> params;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> offsets, numels;  // (under zero3 the parameters themselves are empty most of the time)
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // gradient hooks (ShardedParameters')
  std::vector<uintptr_t> hook_keys;
  int64_t numel = 0, padded = 0, shard = 0;
  int rank = 0;
  // [padded] what the model computes with (compute dtype). Under zero3 its storage holds memory
  // only while the unit is gathered (free_full / restore_full): the tensor and its views stay, so
  // that what autograd saved of the parameters in forward reads the regathered values in backward.
  torch::Tensor full;
  torch::Tensor master;  // fp32, what this rank updates: the whole [padded] or its [shard]
  torch::Tensor
      compute_shard;   // bf16 compute with sharded state: this rank's [shard] of the copy, written by the update
  torch::Tensor grad;  // whole gradients: [padded] packed and all-reduced; sharded: [shard] accumulated
  // Whole gradients only: `grad` still holds the last update's gradient (the pack overwrites it all,
  // so it is not zeroed after each update; a step without a pack since zeroes it then).
  bool grad_consumed = false;
  std::vector<bool> arrived;  // this round's gradient has arrived for parameter i
  size_t n_arrived = 0;
  bool launched = false;  // reduced in this round
  int gathered = 0;       // zero3: runs in progress that need the full parameters
  bool viewed = false;    // the module's parameters are views of `full` (else empty)
  // zero3: a forward ran with a graph, so its backward will need the parameters again (they stay
  // views of `full` until then); and that backward has begun and regathered them.
  bool awaiting_backward = false, backward_gathered = false;

  // Takes over the parameters (fp32, requiring grad: an Error naming the unit otherwise): their
  // values are copied into the flat buffers the policy calls for, and they become views of
  // `full`. Under sharded parameters they are then emptied (release()).
  FlatUnit(std::string name, std::vector<torch::Tensor> params, const ShardingPolicy& policy, int rank, int world,
           torch::ScalarType compute_dtype, const torch::TensorOptions& fp32);

  torch::Tensor mine(const torch::Tensor& whole) const { return whole.narrow(0, rank * shard, shard); }
  // The module's parameters as views of `full` (after it was allocated or gathered).
  void view_parameters();
  // The module's parameters emptied (same dtype and device: autograd's accumulators stay).
  void empty_parameters(torch::ScalarType compute_dtype);
  // `full`'s memory handed back to its allocator, or taken again (contents undefined), in place:
  // every view of `full` sees the new memory. PyTorch FSDP frees its gathered buffers the same way.
  void free_full();
  void restore_full();
  // Each parameter's gradient into `send` (a parameter without one counts as zeros; the padding
  // is zeroed); the parameters' own gradients are dropped, the packed copy is the gradient now.
  void pack_gradients(torch::Tensor& send);
  // A full-length (numel) tensor, padded with zeros to `padded` fp32 elements on the host.
  torch::Tensor padded_copy(const torch::Tensor& t) const;
  void reset_round();  // no gradient arrived, nothing launched
};

}  // namespace dtrainer::parallel
