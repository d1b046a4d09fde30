#pragma once
// Activation checkpointing of one unit, as a custom autograd function: forward runs the unit
// without recording a graph (its activations are not kept); backward runs it again with the graph
// on and back-propagates through that recomputation. Hooks around both runs let zero3 gather the
// unit's parameters just before each run and free them just after.
// The unit must be deterministic (our models have no dropout): the recomputation must reproduce
// the forward exactly.

#include <cstddef>

#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

class CheckpointHooks {
 public:
  virtual ~CheckpointHooks() = default;
  virtual void before_run(size_t /*unit*/, bool /*recompute*/) {}
  // After the forward run, or after the recomputation's backward (the unit's parameter gradients
  // are then accumulated).
  virtual void after_run(size_t /*unit*/, bool /*recompute*/) {}
};

// hooks may be null. Returns the unit's outputs; gradients flow to `inputs` and to the unit's
// parameters (accumulated into .grad during the outer backward).
std::vector<torch::Tensor> run_checkpointed(size_t unit, const UnitRunner::Fn& fn,
                                            const std::vector<torch::Tensor>& inputs, CheckpointHooks* hooks);

}  // namespace dtrainer::models
