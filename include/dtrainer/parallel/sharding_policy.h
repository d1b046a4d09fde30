#pragma once
// What a sharding strategy does, as data: for each unit (one block's flat buffer, padded to a
// multiple of the W ranks and split into W shards), which state a rank keeps whole and which only
// as its shard, whether the unit's parameters are gathered just before it runs and freed after,
// and whether its gradients are all-reduced after the last micro-batch or reduce-scattered after
// every one. ShardedParameters follows the policy, the flat buffers are sized by it, and the
// dry-run's memory estimate is computed from it (train/memory_plan.h): a new strategy is one entry
// in ShardingPolicy::of, and test_sharding_memory holds the sizes to the real buffers.
//
//               optimizer state  gradients               parameters
//   replicate   whole            whole, all-reduced      whole
//   zero1       shard            whole, all-reduced      whole (gathered after the update)
//   zero2       shard            shard, reduce-scattered whole (gathered after the update)
//   zero3       shard            shard, reduce-scattered shard (gathered around each run)

#include <cstdint>
#include <vector>

#include "dtrainer/parallel/sharding_strategy.h"

namespace dtrainer::parallel {

// Per-rank persistent bytes (what the strategy keeps between steps), and the largest transient
// per-unit buffer (a gathered unit under zero3, a unit's packed gradient under zero2/3).
struct ShardedMemory {
  int64_t param_bytes = 0;            // parameters held by this rank: fp32 masters + any bf16 compute copy
  int64_t grad_bytes = 0;             // fp32 gradient buffers held by this rank
  int64_t optimizer_state_bytes = 0;  // m and v held by this rank
  int64_t ema_bytes = 0;              // weight averages (EMA, power-function profiles) held by this rank
  int64_t transient_unit_bytes = 0;   // largest per-unit buffer that exists only while in use
  int64_t padded_elements = 0;        // total flat elements including every unit's padding
  int64_t persistent_bytes() const { return param_bytes + grad_bytes + optimizer_state_bytes + ema_bytes; }
};

// One unit's buffers on one rank, in elements (shard = padded / W). A zero means "none"; a master
// that is a view of `full` (fp32 compute, parameters not sharded) has no storage of its own.
struct UnitBufferSizes {
  int64_t full = 0;    // what the model computes with, between steps (compute dtype)
  int64_t master = 0;  // fp32 masters this rank updates, own storage
  bool master_views_full = false;
  int64_t compute_shard = 0;  // bf16 compute under sharded optimizer state: this rank's shard of the copy
  int64_t grad = 0;           // fp32
  int64_t optimizer = 0;      // m and v, each (fp32)
  int64_t ema = 0;            // fp32, each weight average
  int64_t gathered = 0;       // transient: the parameters gathered while the unit runs (compute dtype)
  int64_t packed_grad = 0;    // transient: the packed gradient a reduce-scatter sends (fp32)
};

struct ShardingPolicy {
  bool shard_optimizer_state = false;  // m, v and the EMA: each rank its shard, and it updates only that
  bool shard_gradients = false;        // gradients reduce-scattered into shards (else all-reduced whole)
  bool shard_parameters = false;       // parameters gathered before a unit runs, freed after
  bool recompute = false;              // every unit recomputed in backward (no strategy sets it; jobs ask per run)

  static ShardingPolicy of(ShardingStrategy strategy);

  // A reduce-scatter leaves no full gradient to accumulate into, so sharded gradients are reduced
  // after every micro-batch; whole ones accumulate locally and are reduced after the last.
  bool reduces_each_micro_batch() const { return shard_gradients; }
  // The flat gradient a rank updates with is its shard of the whole reduced one (zero1).
  bool slices_whole_gradient() const { return shard_optimizer_state && !shard_gradients; }
  // The full parameters are rebuilt from every rank's updated shard after each update (zero1/2).
  bool gathers_after_update() const { return shard_optimizer_state && !shard_parameters; }

  // `low_precision`: bf16 compute (fp32 masters); `averages`: weight averages kept (EMA, profiles).
  UnitBufferSizes buffers(int64_t padded, int world, bool low_precision, int averages) const;
  // What the buffers of units of these padded sizes hold on one rank.
  ShardedMemory memory(const std::vector<int64_t>& padded_units, int world, bool low_precision, int averages) const;
};

// A unit of `numel` elements padded to a multiple of `world`.
inline int64_t padded_size(int64_t numel, int world) { return (numel + world - 1) / world * world; }

}  // namespace dtrainer::parallel
