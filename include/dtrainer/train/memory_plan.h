#pragma once
// Memory per rank, estimated from the plan before anything is allocated (the dry run prints it),
// and checked at start-up against what the node has: a run that cannot fit is refused with the
// numbers and the options that would help, instead of being OOM-killed without a word.

#include <cstdint>
#include <string>

#include "dtrainer/models/backbone.h"

namespace dtrainer::train {

struct TrainConfig;

struct MemoryEstimate {
  double params = 0, grads = 0, optimizer = 0, ema = 0, activations = 0;
  double total() const { return params + grads + optimizer + ema + activations; }
  std::string describe() const;  // "params 4.2 MiB, grads ..., => ~12 MiB"
};

// Per rank: fp32 parameters (+ a bf16 compute copy: whole unless zero3), gradients, AdamW m and v,
// EMA, as the sharding strategy's policy sizes them over `world` ranks (parallel/sharding_policy.h); activations of one
// micro-batch from the analytic count (every op's output kept for backward; with activation checkpointing about a
// tenth).
MemoryEstimate estimate_memory(const TrainConfig& c, const models::BackboneCost& cost, int64_t world,
                               int64_t micro_batch);

// Throws Error("memory", ...) when `ranks_here` ranks of `per_rank` each exceed `available`
// bytes (what `what` names: "host memory (MemAvailable)", "GPU memory of cuda:0"). The message
// gives both numbers and what would help. available < 0: unknown, nothing checked.
void check_memory_fits(const TrainConfig& c, const MemoryEstimate& per_rank, int64_t ranks_here, double available,
                       const std::string& what);

}  // namespace dtrainer::train
