#pragma once
// Models are split into units — one per block (a res block, a transformer stack, a sampler, the
// stem, the head), the granularity at which PyTorch FSDP wraps modules. A model calls every unit
// through a UnitRunner, so that what happens around a unit — nothing, activation checkpointing, or
// zero3's gather-before / free-after — is decided outside the model. Models hold their units as
// models::Unit<Block> handles (models/unit.h) and call them like modules.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace dtrainer::models {

struct ModelUnit {
  std::string name;                       // e.g. "down_blocks.1.attentions.0"
  std::vector<torch::Tensor> parameters;  // the module's own parameter tensors (not copies)
};

class UnitRunner {
 public:
  // fn maps the unit's tensor inputs to its outputs (one or more). It must capture everything else
  // by value: a checkpointing runner calls it again during backward, after the caller's frame is gone.
  using Fn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;
  virtual ~UnitRunner() = default;
  // Runs unit `index` (its position in UnitModel::units()) on `inputs`; gradients flow to them.
  virtual std::vector<torch::Tensor> run(size_t index, const Fn& fn, const std::vector<torch::Tensor>& inputs) = 0;
};

// A model built from units. Every parameter belongs to exactly one unit; the units are numbered in
// the order the model registers them, which must be the order its forward runs them (the order
// gradients are reduced in, reversed, and checkpoints list them in).
class UnitModel {
 public:
  virtual ~UnitModel() = default;
  // The registered units with their parameters.
  std::vector<ModelUnit> units() const;
  // nullptr: run units directly. The runner must outlive its use by the model.
  void set_unit_runner(UnitRunner* runner) { unit_runner_ = runner; }
  UnitRunner* unit_runner() const { return unit_runner_; }

  // Runs unit `index` through the runner (directly when none is set).
  std::vector<torch::Tensor> run_unit(size_t index, const UnitRunner::Fn& fn,
                                      const std::vector<torch::Tensor>& inputs) const {
    return unit_runner_ ? unit_runner_->run(index, fn, inputs) : fn(inputs);
  }

 protected:
  // Appends a unit named `name` owning the parameters of `modules`; returns its index.
  size_t register_unit(std::string name, std::vector<std::shared_ptr<torch::nn::Module>> modules);

 private:
  UnitRunner* unit_runner_ = nullptr;
  std::vector<std::pair<std::string, std::vector<std::shared_ptr<torch::nn::Module>>>> registered_;
};

}  // namespace dtrainer::models
