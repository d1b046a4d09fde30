#pragma once
// Where each named parameter lives in the flat per-unit buffers: unit by unit (UnitModel order),
// the unit's parameters in order, packed back to back (parallel::ShardedParameters' layout). A
// checkpoint stores this beside the flat data, so tools can name and shape every tensor without
// building the model.

#include <cstdint>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace dtrainer::models {

class UnitModel;

struct TensorLayout {
  std::string name;  // the module's parameter name, e.g. "down_blocks.1.attentions.0.proj_in.weight"
  std::vector<int64_t> shape;
  int64_t offset = 0;  // first element in the unit's flat buffer
  int64_t numel() const;
};

struct UnitLayout {
  std::string unit;                   // e.g. "down_blocks.1.attentions.0"
  std::vector<TensorLayout> tensors;  // in flat-buffer order
  int64_t numel = 0;                  // elements of the unit (without padding)
};

// The layout of `units`, named after `module`'s parameters (the same model: every unit parameter
// must be one of the module's). Call it before sharding takes the parameters over.
std::vector<UnitLayout> parameter_layout(torch::nn::Module& module, UnitModel& units);

}  // namespace dtrainer::models
