#pragma once
// Models are split into units — one per block (a res block, a transformer stack, a sampler, the
// stem, the head), the granularity at which PyTorch FSDP wraps modules. A model calls every unit
// through a UnitRunner, so that what happens around a unit — nothing, activation checkpointing, or
// zero3's gather-before / free-after — is decided outside the model.

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace dtrainer::models {

struct ModelUnit {
  std::string name;                       // e.g. "down_blocks.1.attentions.0"
  std::vector<torch::Tensor> parameters;  // the module's own parameter tensors (not copies)
};

class UnitRunner {
 public:
  // fn maps the unit's tensor inputs to its output. It must capture everything else by value: a
  // checkpointing runner calls it again during backward, after the caller's frame is gone.
  using Fn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;
  virtual ~UnitRunner() = default;
  // Runs unit `index` (its position in UnitModel::units()) on `inputs`; gradients flow to them.
  virtual torch::Tensor run(size_t index, const Fn& fn, const std::vector<torch::Tensor>& inputs) = 0;
};

// A model built from units. Every parameter belongs to exactly one unit, and forward runs each
// unit through the runner (directly when none is set).
class UnitModel {
 public:
  virtual ~UnitModel() = default;
  virtual std::vector<ModelUnit> units() = 0;
  // nullptr: run units directly. The runner must outlive its use by the model.
  void set_unit_runner(UnitRunner* runner) { unit_runner_ = runner; }
  UnitRunner* unit_runner() const { return unit_runner_; }

 protected:
  torch::Tensor run_unit(size_t index, const UnitRunner::Fn& fn, const std::vector<torch::Tensor>& inputs) {
    return unit_runner_ ? unit_runner_->run(index, fn, inputs) : fn(inputs);
  }

 private:
  UnitRunner* unit_runner_ = nullptr;
};

}  // namespace dtrainer::models
